"""Helpers for the dashboard tests: runs recorded straight through the Store (the boundary the
supervisor writes through), and a real ``torchyard ui`` server process on a free port."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torchyard.status import RunStatus

XSS = "<img src=x onerror=alert(1)>"


def make_run(
    ws: Any,
    run_id: str,
    *,
    experiment: str = "exp",
    statuses: Sequence[RunStatus] = (RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.COMPLETED),
    tags: Mapping[str, str] | None = None,
    display_name: str | None = None,
    parent_id: str | None = None,
    spec: Mapping[str, Any] | None = None,
    series: Mapping[str, tuple[Sequence[float], Sequence[int | None]]] | None = None,
    rank_series: Mapping[int, Mapping[str, tuple[Sequence[float], Sequence[int | None]]]] | None = None,
    logs: Mapping[int, str] | None = None,
    artifacts: Mapping[str, bytes] | None = None,
    source: Path | None = None,
    summarize: bool = True,
) -> str:
    """Record a run with the given history, metrics, rank logs, artifacts and snapshot."""
    from torchyard.workspace.summary import update_summary

    store = ws.store
    run_dir = ws.run_dir(run_id)
    os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
    props = {}
    if source is not None:
        snap = ws.snapshots.take(str(source))
        props["torchyard.snapshot"] = snap.manifest_id
    store.create_run(
        run_id=run_id, experiment=experiment, spec_json=json.dumps(spec or {"command": "python train.py"}),
        compute_target="local", run_dir=run_dir, tags=dict(tags or {}), display_name=display_name,
        parent_id=parent_id, properties=props, queued=True,
        kind="sweep" if (spec or {}).get("kind") == "sweep" else "trial" if parent_id else "run",
    )
    for status in statuses:
        store.set_status(run_id, status, exit_code=0 if status is RunStatus.COMPLETED else None)
    per_rank = dict(rank_series or {})
    if series:
        per_rank[0] = series
    for rank, named in per_rank.items():
        now = time.time()
        packed = [(name, list(v), list(s), [now + i * 1e-3 for i in range(len(v))]) for name, (v, s) in named.items()]
        store.insert_series(run_id, rank, packed)
        if summarize:
            update_summary(store.engine, run_id, rank, packed)
    for rank, text in (logs or {}).items():
        Path(run_dir, "logs", f"rank_{rank}.txt").write_text(text)
    for rel, data in (artifacts or {}).items():
        dest = Path(ws.artifacts_dir(run_id), rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return run_id


def log_point(ws: Any, run_id: str, name: str, value: float, step: int, rank: int = 0) -> None:
    """Store one new value as the supervisor's ingestor would (a packed chunk, then the summary)."""
    from torchyard.workspace.summary import update_summary

    packed = [(name, [value], [step], [time.time()])]
    ws.store.insert_series(run_id, rank, packed)
    update_summary(ws.store.engine, run_id, rank, packed)


def make_system_run(ws: Any, run_id: str, *, nodes: int = 2, per_node: int = 2, gpus: int = 1, samples: int = 120,
                    every: float = 5.0, experiment: str = "exp",
                    statuses: Sequence[RunStatus] = (RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.COMPLETED)) -> str:
    """A run of ``nodes`` nodes whose launchers sampled ``system/...`` series every ``every`` seconds
    (stored, as the supervisor stores them, under each node's first rank, without steps), beside the
    script's own ``loss`` on rank 0."""
    import math

    spec = {"command": "python train.py", "distribution": {"node_count": nodes, "process_count_per_node": per_node}}
    make_run(ws, run_id, experiment=experiment, spec=spec, statuses=statuses,
             series={"loss": ([2.0 / (1 + i) for i in range(50)], list(range(50)))})
    start = time.time() - samples * every
    for node in range(nodes):
        ts = [start + i * every for i in range(samples)]
        wave = [math.sin(i / 9 + node) for i in range(samples)]
        named = {"system/cpu_percent": [55 + 30 * w + 5 * node for w in wave],
                 "system/memory_percent": [40 + 2 * w + 10 * node for w in wave],
                 "system/memory_used_gb": [12 + w + 4 * node for w in wave],
                 "system/net_recv_mb_s": [20 + 15 * w for w in wave]}
        for g in range(gpus):
            named[f"system/gpu_{g}/utilization_percent"] = [80 + 15 * math.sin(i / 5 + g + node) for i in range(samples)]
            named[f"system/gpu_{g}/power_w"] = [250 + 20 * node + 60 * math.sin(i / 7 + g + node) for i in range(samples)]
        ws.store.insert_series(run_id, node * per_node,
                               [(name, values, [None] * samples, ts) for name, values in named.items()])
    return run_id


class UiServer:
    """A running ``torchyard ui`` process: ``url``, ``host_port``, and its output so far."""

    def __init__(self, proc: subprocess.Popen[str], url: str, output: list[str]) -> None:
        self.proc = proc
        self.url = url.split("?")[0]
        self.login_url = url
        self.host_port = re.sub(r"^http://|/$", "", self.url)
        self.output = output


@contextmanager
def ui_server(workspace: str, *extra: str, env: Mapping[str, str] | None = None,
              timeout: float = 20.0) -> Iterator[UiServer]:
    """Start ``torchyard ui --port 0`` on ``workspace``; stop it (and wait) on the way out."""
    cmd = [sys.executable, "-m", "torchyard", "ui", "--port", "0", "--workspace", workspace, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    output: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("http://") and not url:
                url.append(line.strip())
                found.set()
        found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not found.wait(timeout) or not url:
            raise RuntimeError(f"torchyard ui printed no URL: {''.join(output)}")
        yield UiServer(proc, url[0], output)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


def make_sweep(ws: Any, parent_id: str, trials: Sequence[tuple[dict[str, Any], Sequence[float], str]],
               *, metric: str = "accuracy", goal: str = "MAXIMIZE", experiment: str = "sweeps") -> list[str]:
    """A sweep parent and its trials: (hyperparameters, primary metric values, how it ended) each,
    where ``how`` is ``completed``, ``running`` or ``early`` (canceled by the policy)."""
    spec = {"kind": "sweep", "primary_metric_name": metric, "primary_metric_goal": goal}
    make_run(ws, parent_id, experiment=experiment, spec=spec,
             statuses=(RunStatus.RUNNING,), display_name="a sweep")
    ids = []
    for i, (params, values, how) in enumerate(trials):
        child = f"{parent_id}_{i}"
        statuses: tuple[RunStatus, ...] = (RunStatus.RUNNING,)
        if how == "completed":
            statuses = (RunStatus.RUNNING, RunStatus.COMPLETED)
        make_run(ws, child, experiment=experiment, parent_id=parent_id, statuses=statuses,
                 tags={"hyperparameters": json.dumps(params)},
                 series={metric: (list(values), list(range(len(values))))})
        if how == "early":
            ws.store.set_status(child, RunStatus.CANCEL_REQUESTED, "early terminated by BanditPolicy at interval 3")
            ws.store.set_status(child, RunStatus.CANCELED, "early terminated by BanditPolicy at interval 3")
        ids.append(child)
    return ids
