"""The checkpoint contract inside a script: ``run.latest_checkpoint()`` and ``run.checkpoint(step)``.

Stdlib only (this is imported inside user processes). The folder is ``TORCHYARD_CHECKPOINT_DIR`` (the
launcher sets it on every rank; ``./checkpoints`` when a script runs bare). A checkpoint of step N is
written by every rank into ``step_N.tmp.<attempt>/``; a rank that leaves ``with run.checkpoint(N)``
without an error drops ``.rank_K.done`` there, and the rank that completes the set (whichever it is:
no rank waits for another) writes the manifest and renames the folder to ``step_N/``. A rename is
atomic, so ``step_N/`` with its manifest is a whole checkpoint and a crash mid-save leaves the previous
one the latest. Then the oldest committed ones beyond ``keep_last`` are deleted, except, with
``keep_best=(metric, "min"|"max")``, the best one by that metric. The run's supervisor copies committed
checkpoints into the run's artifacts (``checkpoints/step_N/``) and drops there what retention deleted.

Who decides: each rank's ``.rank_K.done`` marker carries its ``metrics``, ``keep_last`` and
``keep_best``; the committing rank records the metrics of the lowest rank that gave any (rank 0 on a
shared folder) in the manifest and applies the lowest rank's retention, so the decision does not depend
on which rank happens to commit. Retention is a function of the committed manifests alone (ties: the
earliest step), so two ranks committing different steps at once never delete each other's best.

How many ranks complete a set: those that share the folder. The launcher of every node leaves
``.node_K`` in it, so on a shared file system (local compute) every rank of the job counts, and on a
node-local folder each node commits its own ranks' part.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "torchyard_checkpoint.json"
KEEP_LAST = 3
_PREFIX = "step_"
_MODES = ("min", "max")


def check_keep_best(keep_best: Any) -> tuple[str, str] | None:
    """``keep_best`` as ``(metric, "min"|"max")``, or None; a clear ValueError for anything else."""
    if keep_best is None:
        return None
    from torchyard.errors import SpecError  # noqa: PLC0415

    if (not isinstance(keep_best, tuple | list) or len(keep_best) != 2 or not isinstance(keep_best[0], str)
            or not keep_best[0] or keep_best[1] not in _MODES):
        raise SpecError("keep_best", f"expected (METRIC, 'min') or (METRIC, 'max'), e.g. ('val_loss', 'min'), "
                                     f"got {keep_best!r}")
    return str(keep_best[0]), str(keep_best[1])


def _metric_value(metrics: Any, name: str) -> float | None:
    value = metrics.get(name) if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def best_step(checkpoints: list[tuple[int, dict[str, Any]]], keep_best: tuple[str, str]) -> int | None:
    """The step of the best of ``checkpoints`` ((step, manifest), any order) by ``keep_best``: the
    lowest (``min``) or highest (``max``) value of the metric among those that recorded it, the
    earliest step on a tie; None when none recorded it."""
    name, mode = keep_best
    sign = 1.0 if mode == "min" else -1.0
    scored = [(sign * v, step) for step, manifest in checkpoints
              if (v := _metric_value(manifest.get("metrics"), name)) is not None]
    return min(scored)[1] if scored else None


def checkpoint_root(env: Mapping[str, str] | None = None) -> Path:
    """This rank's checkpoint folder: TORCHYARD_CHECKPOINT_DIR, else ``./checkpoints``."""
    env = os.environ if env is None else env
    return Path(env.get("TORCHYARD_CHECKPOINT_DIR") or os.path.abspath("checkpoints"))


def _step_of(name: str) -> int | None:
    if not name.startswith(_PREFIX):
        return None
    try:
        return int(name[len(_PREFIX):])
    except ValueError:
        return None


def committed(root: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The committed checkpoints in ``root``: (step, folder), oldest step first."""
    found = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        step = _step_of(entry.name)
        if step is not None and entry.is_dir() and os.path.isfile(os.path.join(entry.path, MANIFEST)):
            found.append((step, Path(entry.path)))
    return sorted(found)


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    with open(os.path.join(folder, MANIFEST)) as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def list_checkpoints(root: str | os.PathLike[str], where: str | None = None) -> list[dict[str, Any]]:
    """Each committed checkpoint in ``root`` as ``{step, time, size, metrics, attempt, world_size, path}``."""
    out = []
    for step, folder in committed(root):
        try:
            manifest = read_manifest(folder)
        except (OSError, ValueError):
            continue
        out.append({
            "step": step,
            "time": manifest.get("time"),
            "size": manifest.get("size", 0),
            "metrics": manifest.get("metrics") or {},
            "attempt": manifest.get("attempt", 0),
            "world_size": manifest.get("world_size"),
            "path": str(folder),
            "where": where or str(folder),
        })
    return out


def _folder_size(folder: str | os.PathLike[str]) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total


def _expected_ranks(root: Path, env: Mapping[str, str]) -> int:
    """How many ranks write into this folder: every rank of the nodes whose ``.node_K`` is here."""
    world = int(env.get("WORLD_SIZE") or 1)
    per_node = int(env.get("LOCAL_WORLD_SIZE") or world)
    try:
        nodes = sum(1 for name in os.listdir(root) if name.startswith(".node_"))
    except OSError:
        nodes = 0
    return world if nodes == 0 else min(world, nodes * per_node)


def _markers(tmp: Path, done: list[str]) -> list[dict[str, Any]]:
    """The ranks' markers in ``tmp``, lowest rank first (a marker that cannot be read is left out)."""
    out = []
    for name in done:
        try:
            with open(tmp / name) as fh:
                mark = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(mark, dict):
            mark.setdefault("rank", int(name[len(".rank_"):-len(".done")]))
            out.append(mark)
    return sorted(out, key=lambda m: int(m["rank"]))


def _commit(root: Path, tmp: Path, step: int, attempt: int, env: Mapping[str, str],
            metrics: Mapping[str, Any] | None, keep_last: int,
            keep_best: tuple[str, str] | None = None) -> Path | None:
    """Commit ``tmp`` as ``step_N/`` when every rank's marker is there and no other rank got there
    first; the committed folder, or None when it is not this rank's to commit."""
    try:
        done = [n for n in os.listdir(tmp) if n.startswith(".rank_") and n.endswith(".done")]
    except OSError:  # another rank committed it already
        return None
    if len(done) < _expected_ranks(root, env):
        return None
    try:
        os.mkdir(tmp / ".committing")  # atomic: one rank commits
    except OSError:  # another rank is committing it, or has (the folder is gone)
        return None
    marks = _markers(tmp, done)
    first = marks[0] if marks else {}
    if "keep_last" in first:  # the lowest rank's retention and metrics, not whichever rank commits
        keep_last = int(first["keep_last"])
        keep_best = check_keep_best(first.get("keep_best"))
        metrics = next((m["metrics"] for m in marks if m.get("metrics")), None)
    recorded = dict(metrics or {})
    manifest = {
        "step": step,
        "time": time.time(),
        "attempt": attempt,
        "world_size": int(env.get("WORLD_SIZE") or 1),
        "ranks": sorted(int(n[len(".rank_"):-len(".done")]) for n in done),
        "size": _folder_size(tmp),
        "metrics": recorded,
        "keep_last": keep_last,
        "keep_best": list(keep_best) if keep_best else None,
    }
    if keep_best and _metric_value(recorded, keep_best[0]) is None:
        print(f"torchyard: checkpoint step {step} has no numeric metric {keep_best[0]!r} (its metrics: "
              f"{', '.join(recorded) or 'none'}): keep_best ranks only those that have it",
              file=sys.stderr, flush=True)
    with open(tmp / (MANIFEST + ".tmp"), "w") as fh:
        json.dump(manifest, fh)
    os.replace(tmp / (MANIFEST + ".tmp"), tmp / MANIFEST)
    final = root / f"{_PREFIX}{step}"
    if final.exists():  # the same step saved again (a resumed attempt): replace it
        aside = root / f".{final.name}.old.{os.getpid()}"
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _retain(root, step, keep_last, keep_best)
    return final


def retained(found: list[tuple[int, dict[str, Any]]], keep_last: int,
             keep_best: tuple[str, str] | None) -> set[int]:
    """The steps retention keeps of ``found`` ((step, manifest), oldest first): all with ``keep_last``
    0, else the newest ``keep_last`` and the best by ``keep_best``."""
    steps = [step for step, _m in found]
    if keep_last <= 0:
        return set(steps)
    keep = set(steps[-keep_last:])
    best = best_step(found, keep_best) if keep_best else None
    if best is not None:
        keep.add(best)
    return keep


def _retain(root: Path, step: int, keep_last: int, keep_best: tuple[str, str] | None = None) -> None:
    """Delete committed checkpoints beyond the newest ``keep_last`` but the best by ``keep_best``, and
    unfinished ones of earlier steps (a crash mid-save left them)."""
    if keep_last > 0:
        found = []
        for s, folder in committed(root):
            try:
                found.append((s, read_manifest(folder), folder))
            except (OSError, ValueError):  # deleted meanwhile by another rank's retention
                continue
        keep = retained([(s, m) for s, m, _f in found], keep_last, keep_best)
        for s, _m, folder in found:
            if s not in keep:
                shutil.rmtree(folder, ignore_errors=True)
    for entry in os.scandir(root):
        base, sep, _attempt = entry.name.partition(".tmp.")
        unfinished = _step_of(base) if sep else None
        if unfinished is not None and unfinished < step:
            shutil.rmtree(entry.path, ignore_errors=True)


class CheckpointMixin:
    """``latest_checkpoint()`` and ``checkpoint(step)`` for the run a script sees (live or offline)."""

    @property
    def checkpoint_dir(self) -> Path:
        """This rank's checkpoint folder (TORCHYARD_CHECKPOINT_DIR)."""
        return checkpoint_root()

    @property
    def preempted(self) -> bool:
        """Whether the run is being preempted (``torchyard cancel --requeue``): every rank got SIGTERM
        and has the job's ``preempt_grace_seconds`` to commit a checkpoint (``with
        run.checkpoint(...)``) and exit; the run then resumes from it. The file TORCHYARD_PREEMPT_FLAG
        names exists meanwhile, for scripts without the SDK."""
        flag = os.environ.get("TORCHYARD_PREEMPT_FLAG")
        return flag is not None and os.path.exists(flag)

    def latest_checkpoint(self) -> Path | None:
        """The folder of the latest committed checkpoint (``step_N/``), or None when there is none.
        On a resumed attempt whose node has none of its own: TORCHYARD_RESUME_FROM."""
        found = committed(checkpoint_root())
        if found:
            return found[-1][1]
        resume = os.environ.get("TORCHYARD_RESUME_FROM")
        return Path(resume) if resume else None

    @contextmanager
    def checkpoint(self, step: int, *, keep_last: int = KEEP_LAST, keep_best: tuple[str, str] | None = None,
                   metrics: Mapping[str, Any] | None = None) -> Iterator[Path]:
        """Write checkpoint ``step``: every rank enters, writes its part into the folder it is given,
        and leaves. It is committed (``step_N/``, the new latest) once every rank has left the block
        without an error; a rank that raises leaves the previous checkpoint the latest. Keeps the
        newest ``keep_last`` (0: all) and, with ``keep_best=("val_loss", "min")`` (or ``"max"``), also
        the best checkpoint by that metric of the ``metrics`` recorded with each (``get_checkpoints()``).
        Rank 0's ``metrics``, ``keep_last`` and ``keep_best`` decide (the lowest rank in the folder)."""
        env = os.environ
        step = int(step)
        keep_last = int(keep_last)
        best = check_keep_best(keep_best)
        recorded = {str(k): v.item() if hasattr(v, "item") else v for k, v in (metrics or {}).items()}  # a tensor, numpy
        try:
            json.dumps(recorded)
        except (TypeError, ValueError) as exc:
            from torchyard.errors import SpecError  # noqa: PLC0415

            raise SpecError("metrics", f"checkpoint metrics must be numbers or strings: {exc}") from None
        root = checkpoint_root(env)
        attempt = int(env.get("TORCHYARD_ATTEMPT") or 0)
        rank = int(env.get("RANK") or 0)
        tmp = root / f"{_PREFIX}{step}.tmp.{attempt}"
        os.makedirs(tmp, exist_ok=True)
        yield tmp
        flush = getattr(self, "flush", None)
        if flush is not None:  # what was logged up to a checkpoint is in the journal before it is committed
            flush()
        marker = tmp / f".rank_{rank}.done"
        with open(str(marker) + ".tmp", "w") as fh:
            json.dump({"rank": rank, "time": time.time(), "metrics": recorded, "keep_last": keep_last,
                       "keep_best": list(best) if best else None}, fh)
        os.replace(str(marker) + ".tmp", marker)
        _commit(root, tmp, step, attempt, env, recorded, keep_last, best)
