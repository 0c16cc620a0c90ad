"""A sweep controller as a process: starting it, telling whether it lives, starting it again."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from typing import Any

from torchyard.paths import RunPaths
from torchyard.runtime.spawn import spawn_detached


def _info_path(run_dir: str) -> str:
    return RunPaths(run_dir).controller_info


def _lock_path(run_dir: str) -> str:
    return RunPaths(run_dir).controller_lock


def spawn_controller(run_dir: str, python: str | None = None) -> int:
    """Start the controller of the sweep in ``run_dir``, detached (a shell starts it in the background
    and exits, so it is nobody's child and outlives the submitter). Returns its pid."""
    log = RunPaths(run_dir).controller_log
    os.makedirs(os.path.dirname(log), exist_ok=True)
    return spawn_detached("torchyard.runtime.sweep_controller", run_dir, log, python, what="the sweep controller")


def controller_alive(run_dir: str) -> bool:
    """Whether a controller holds the sweep's lock (a dead one releases it with its last breath)."""
    try:
        fh = open(_lock_path(run_dir), "a")  # noqa: SIM115
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _starting(run_dir: str) -> bool:
    """Whether a controller started by ``resume`` is still on its way to taking the lock."""
    import psutil  # noqa: PLC0415

    try:
        with open(RunPaths(run_dir).controller_spawned) as fh:
            pid, when = fh.read().split()
        proc = psutil.Process(int(pid))
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= float(when) + 5
    except (OSError, ValueError, psutil.Error):
        return False


def resume(run_dir: str) -> int | None:
    """Start the controller again unless one is running (or starting); returns the new pid, or None."""
    if controller_alive(run_dir) or _starting(run_dir):
        return None
    python = None
    try:
        with open(_info_path(run_dir)) as fh:
            python = json.load(fh).get("python")
    except (OSError, ValueError):
        pass
    pid = spawn_controller(run_dir, python)
    with open(RunPaths(run_dir).controller_spawned, "w") as fh:
        fh.write(f"{pid} {time.time()}")
    return pid


def revive(store: Any, row: dict[str, Any]) -> dict[str, Any]:
    """The reconcile path for a sweep whose controller is gone: start it again, instead of failing the
    sweep (its trials run on in their own supervisors). Returns the row."""
    try:
        resume(str(row["run_dir"]))
    except Exception as err:  # cannot restart here: say so, and let the run be judged as any other
        print(f"torchyard: could not restart the controller of sweep {row['id']}: {err}", file=sys.stderr)
    return dict(store.get_run(row["id"]))


def child_index(row: dict[str, Any], parent_id: str) -> int | None:
    suffix = str(row["id"])[len(parent_id) + 1 :]
    return int(suffix) if suffix.isdigit() else None
