"""Canceling a run: one path for the SDK, the CLI and the sweep controller."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from torchyard.runtime.liveness import pid_alive
from torchyard.status import TERMINAL_VALUES, RunStatus

USER_CANCEL = "canceled by user"


#: the cancel reason of a preemption (``requeue``): the supervisor stops the job and starts it again
PREEMPT = "preempted"


def cancel_run(store: Any, row: dict[str, Any], reason: str | None = None, *, requeue: bool = False) -> None:
    """Ask the run in ``row`` to stop: CancelRequested (with ``reason``) in the store first, then
    SIGTERM to its supervisor when it runs on this host. Idempotent; a terminal run is left alone.
    With ``requeue`` the request is a preemption (``details["requeue"]``): the supervisor gives the
    ranks their grace to checkpoint, then starts the job again from its latest checkpoint.

    The order matters: a supervisor that is still starting ignores SIGTERM until its handler is in
    place, then reads the status, so the request is never lost."""
    if requeue and row["status"] not in (RunStatus.RUNNING, RunStatus.STARTING):
        from torchyard.errors import ComputeError  # noqa: PLC0415

        raise ComputeError(f"run {row['id']} is {row['status']}: only a Starting or Running run can be preempted "
                           "(--requeue); cancel it, or wait until it runs")
    if row["status"] in TERMINAL_VALUES:
        return
    from torchyard.workspace.store import HOSTNAME  # noqa: PLC0415

    if requeue:  # the flag goes in with the status, atomically: a cancel already under way stays a cancel
        if not store.set_status(row["id"], RunStatus.CANCEL_REQUESTED, f"{PREEMPT}: {reason or 'requeue requested'}",
                                details={"requeue": {"time": time.time(), "reason": reason or PREEMPT}}):
            return  # already stopping (a cancel or a preemption under way): that one goes on
    else:
        store.set_status(row["id"], RunStatus.CANCEL_REQUESTED, reason or USER_CANCEL)
    pid = row.get("supervisor_pid")
    if pid is None:  # recorded by the submitter just now: read it again
        pid = store.get_run(row["id"]).get("supervisor_pid")
    if pid and row.get("supervisor_host") in (None, HOSTNAME) and pid_alive(pid, time.time()):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
