"""Noticing a run whose supervisor (or a sweep whose controller) died.

A run whose supervisor stops heart-beating is NotResponding, then Failed; a sweep whose controller
is gone has its controller started again instead (its trials run on in their own supervisors)."""

from __future__ import annotations

import time
from typing import Any

from torchyard.status import ACTIVE_VALUES, RunKind, RunStatus

#: a supervisor silent this long is NotResponding; this long again and the run is Failed
STALE_SECONDS = 30.0
DEAD_SECONDS = 300.0


def pid_alive(pid: int, since: float) -> bool:
    """Whether process ``pid`` lives and was started no later than ``since`` (not a reused pid)."""
    import psutil  # noqa: PLC0415

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= since + 5
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def reconcile(store: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Notice a run whose supervisor died: NotResponding, then Failed. Returns the fresh row."""
    from torchyard.workspace.store import HOSTNAME  # noqa: PLC0415

    if row["status"] not in ACTIVE_VALUES or row["status"] == RunStatus.NOT_STARTED:
        return row
    pid, beat = row.get("supervisor_pid"), row.get("heartbeat_at")
    if pid is None or beat is None:
        return row
    now = time.time()
    gone = row.get("supervisor_host") == HOSTNAME and not pid_alive(pid, now)
    stale = now - beat
    if not gone and stale < STALE_SECONDS:
        return row
    run_id = row["id"]
    if row.get("kind") == RunKind.SWEEP.value:
        from torchyard.runtime.sweep_process import revive  # noqa: PLC0415

        return revive(store, row)  # a sweep's controller is restarted, not given up on
    if gone or stale >= DEAD_SECONDS:
        why = f"supervisor process {pid} is gone" if gone else f"no supervisor heartbeat for {stale:.0f} s"
        cause = _left_cause(row.get("run_dir"))
        if cause:
            why = f"{why}: {cause}"
        store.set_status(run_id, RunStatus.NOT_RESPONDING, why)
        store.set_status(
            run_id, RunStatus.FAILED, why, details={"error": {"message": f"{why}; the run was not completed"}}
        )
    else:
        store.set_status(run_id, RunStatus.NOT_RESPONDING, f"no supervisor heartbeat for {stale:.0f} s")
    return dict(store.get_run(run_id))


def _left_cause(run_dir: str | None) -> str | None:
    """What a supervisor that could not record its run's end left in the run folder, if anything."""
    if not run_dir:
        return None
    from torchyard.paths import RunPaths  # noqa: PLC0415

    try:
        with open(RunPaths(run_dir).supervisor_error) as fh:
            return fh.read(2000).strip() or None
    except OSError:
        return None
