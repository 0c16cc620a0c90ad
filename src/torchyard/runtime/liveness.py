"""Noticing a run whose supervisor (or a sweep whose controller) died.

A run whose supervisor is gone while its job lives on (a target that can find it again: local
compute's launchers outlive their supervisor) gets a new supervisor, started exactly once, which
adopts the job (``runtime.supervisor``); otherwise a run whose supervisor stops heart-beating is
NotResponding, then Failed. A sweep whose controller is gone has its controller started again
(its trials run on in their own supervisors)."""

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

    if pid <= 0:  # -1: a supervisor being replaced (Store.claim_supervisor)
        return False
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
    if pid < 0:  # being replaced: the replacement has until the heartbeat goes stale to say so
        gone = now - beat >= STALE_SECONDS
    else:
        gone = row.get("supervisor_host") == HOSTNAME and not pid_alive(pid, now)
    stale = now - beat
    if not gone and stale < STALE_SECONDS:
        return row
    run_id = row["id"]
    if row.get("kind") == RunKind.SWEEP.value:
        from torchyard.runtime.sweep_process import revive  # noqa: PLC0415

        return revive(store, row)  # a sweep's controller is restarted, not given up on
    if gone and row.get("supervisor_host") == HOSTNAME and replace_supervisor(store, row):
        return dict(store.get_run(run_id))
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


def readopt_all(store: Any) -> int:
    """Look at every active run once (a server at boot): each whose supervisor is gone gets a
    replacement (or is failed, when its job is gone too). How many were looked at."""
    seen = 0
    for status in ACTIVE_VALUES:
        if status == RunStatus.NOT_STARTED:
            continue
        for row in store.list_runs(status=status):
            seen += 1
            try:
                reconcile(store, row)
            except Exception as err:  # noqa: BLE001  (one run's trouble never stops the others' or the server)
                print(f"torchyard: could not check run {row['id']}'s supervisor: {err}", flush=True)
    return seen


def readopt_in_background(store: Any) -> None:
    """:func:`readopt_all` in a daemon thread: a server answers at once while it looks."""
    import threading  # noqa: PLC0415

    threading.Thread(target=readopt_all, args=(store,), daemon=True, name="readopt").start()


def adoptable(run_dir: str | None) -> bool:
    """Whether the run's job can be adopted by a new supervisor: its handle is recorded and a
    launcher lives on, or every launcher ended with its report written."""
    if not run_dir:
        return False
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415

    from torchyard.compute.local_alloc import _alive  # noqa: PLC0415
    from torchyard.paths import RunPaths  # noqa: PLC0415

    try:
        with open(RunPaths(run_dir).handle) as fh:
            state = json.load(fh)
        if state.get("kind"):  # a scheduler's job (Slurm's by id): the replacement asks the scheduler
            return True
        launchers = [(int(p), float(c)) for p, c in state["launchers"]]
        reports = [str(p) for p in state["status_paths"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if any(_alive(pid, ctime) for pid, ctime in launchers):
        return True
    return bool(reports) and all(os.path.exists(p) for p in reports)


def replace_supervisor(store: Any, row: dict[str, Any]) -> bool:
    """Start the supervisor that adopts the run's job, when it can be adopted and nobody else
    started one (the store's claim); whether one was started."""
    from torchyard.paths import RunPaths  # noqa: PLC0415

    run_dir = row.get("run_dir")
    if not run_dir or not adoptable(run_dir) or not store.claim_supervisor(row["id"], row["supervisor_pid"]):
        return False
    from torchyard.runtime.submit import spawn_supervisor  # noqa: PLC0415

    try:
        pid = spawn_supervisor(run_dir)
    except (OSError, RuntimeError) as err:
        print(f"torchyard: could not start a supervisor for run {row['id']}: {err} (see "
              f"{RunPaths(run_dir).supervisor_log})", flush=True)
        return False
    store.set_supervisor(row["id"], pid)
    return True


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
