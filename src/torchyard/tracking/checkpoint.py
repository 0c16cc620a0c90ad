"""The checkpoint contract inside a script: ``run.latest_checkpoint()`` and ``run.checkpoint(step)``.

Stdlib only (this is imported inside user processes). The folder is ``TORCHYARD_CHECKPOINT_DIR`` (the
launcher sets it on every rank; ``./checkpoints`` when a script runs bare). A checkpoint of step N is
written by every rank into ``step_N.tmp.<attempt>/``; a rank that leaves ``with run.checkpoint(N)``
without an error drops ``.rank_K.done`` there, and the rank that completes the set (whichever it is:
no rank waits for another) writes the manifest and renames the folder to ``step_N/``. A rename is
atomic, so ``step_N/`` with its manifest is a whole checkpoint and a crash mid-save leaves the previous
one the latest. Then the oldest committed ones beyond ``keep_last`` are deleted. The run's supervisor
copies committed checkpoints into the run's artifacts (``checkpoints/step_N/``).

How many ranks complete a set: those that share the folder. The launcher of every node leaves
``.node_K`` in it, so on a shared file system (local compute) every rank of the job counts, and on a
node-local folder each node commits its own ranks' part.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "torchyard_checkpoint.json"
KEEP_LAST = 3
_PREFIX = "step_"


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


def _commit(root: Path, tmp: Path, step: int, attempt: int, env: Mapping[str, str],
            metrics: Mapping[str, Any] | None, keep_last: int) -> Path | None:
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
    manifest = {
        "step": step,
        "time": time.time(),
        "attempt": attempt,
        "world_size": int(env.get("WORLD_SIZE") or 1),
        "ranks": sorted(int(n[len(".rank_"):-len(".done")]) for n in done),
        "size": _folder_size(tmp),
        "metrics": dict(metrics or {}),
    }
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
    _retain(root, step, keep_last)
    return final


def _retain(root: Path, step: int, keep_last: int) -> None:
    """Delete committed checkpoints beyond the newest ``keep_last``, and unfinished ones of earlier
    steps (a crash mid-save left them)."""
    if keep_last > 0:
        for _step, folder in committed(root)[:-keep_last]:
            shutil.rmtree(folder, ignore_errors=True)
    for entry in os.scandir(root):
        base, sep, _attempt = entry.name.partition(".tmp.")
        s = _step_of(base) if sep else None
        if s is not None and s < step:
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
    def checkpoint(self, step: int, *, keep_last: int = KEEP_LAST,
                   metrics: Mapping[str, Any] | None = None) -> Iterator[Path]:
        """Write checkpoint ``step``: every rank enters, writes its part into the folder it is given,
        and leaves. It is committed (``step_N/``, the new latest) once every rank has left the block
        without an error; a rank that raises leaves the previous checkpoint the latest. Keeps the
        newest ``keep_last`` (0: all). ``metrics`` are recorded with it (``get_checkpoints()``)."""
        env = os.environ
        step = int(step)
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
            json.dump({"rank": rank, "time": time.time()}, fh)
        os.replace(str(marker) + ".tmp", marker)
        _commit(root, tmp, step, attempt, env, metrics, keep_last)
