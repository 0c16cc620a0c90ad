"""TensorBoard over torchyard runs: find a run's event files, or write its metrics as event files.

A rank's ``SummaryWriter(os.environ["TORCHYARD_TENSORBOARD_DIR"])`` writes under the run's
``logs/tensorboard/rank_N`` (kept with the run's logs). A run that wrote none gets its scalar
metrics (every rank's, with their steps and wall times) exported by :func:`export_metrics` into
``<workspace>/tensorboard/RUN_ID/rank_N``, rewritten on every call so it shows what the store has now.
The ``tensorboard`` package is imported only by the export.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

EVENTS_MARK = "tfevents"


def has_events(folder: str) -> bool:
    """Whether ``folder`` holds a TensorBoard event file anywhere below it."""
    return any(EVENTS_MARK in f for _dirpath, _dirs, files in os.walk(folder) for f in files)


def run_event_dir(ws: Any, run_id: str) -> str | None:
    """The folder with the run's own event files: the live run folder's ``logs/tensorboard`` (where
    ranks write), else the kept artifacts' copy; None when the run wrote none."""
    row = ws.store.get_run(run_id)
    for folder in (os.path.join(row["run_dir"], "logs", "tensorboard"),
                   os.path.join(ws.artifacts_dir(run_id), "logs", "tensorboard")):
        if os.path.isdir(folder) and has_events(folder):
            return folder
    return None


def export_metrics(ws: Any, run_id: str) -> tuple[str, int]:
    """Write the run's scalar metrics as event files, one folder per rank; returns (folder, values)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: PLC0415
    from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: PLC0415

    ws.store.get_run(run_id)  # NotFoundError for an unknown run
    dest = os.path.join(ws.path, "tensorboard", run_id)
    shutil.rmtree(dest, ignore_errors=True)
    series = ws.store.get_series(run_id, rank=None)
    by_rank: dict[int, list[tuple[str, list[float], list[int | None], list[float]]]] = {}
    for (rank, name), (values, steps, ts) in sorted(series.items()):
        by_rank.setdefault(rank, []).append((name, values, steps, ts))
    count = 0
    os.makedirs(dest, exist_ok=True)
    for rank, metrics in by_rank.items():
        writer = EventFileWriter(os.path.join(dest, f"rank_{rank}"))
        try:
            for name, values, steps, ts in metrics:
                for i, (value, step, wall) in enumerate(zip(values, steps, ts, strict=True)):
                    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, simple_value=value)])
                    writer.add_event(event_pb2.Event(wall_time=wall, step=i if step is None else step, summary=summary))
                    count += 1
        finally:
            writer.close()
    return dest, count


def logdirs(ws: Any, run_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{run_id: (folder, "events" | "exported")}`` for TensorBoard's ``--logdir_spec``."""
    out: dict[str, tuple[str, str]] = {}
    for run_id in run_ids:
        own = run_event_dir(ws, run_id)
        out[run_id] = (own, "events") if own else (export_metrics(ws, run_id)[0], "exported")
    return out
