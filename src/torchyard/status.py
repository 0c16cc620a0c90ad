"""Run statuses. Terminal ones never change again."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any, TextIO


class RunStatus(enum.StrEnum):
    """A run's status. Every change is stored with its time; a terminal status never changes again
    (:attr:`is_terminal`)."""
    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    CANCEL_REQUESTED = "CancelRequested"
    RETRYING = "Retrying"  # an attempt failed and another starts (JobSpec.max_retries)
    NOT_RESPONDING = "NotResponding"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})
ACTIVE = frozenset(RunStatus) - TERMINAL
# A RunStatus is a str: the stored strings are members of these sets too
TERMINAL_VALUES = TERMINAL
ACTIVE_VALUES = ACTIVE


class RunKind(enum.StrEnum):
    """What a run row is: an ordinary run, a sweep's parent, or one of its trials."""

    RUN = "run"
    SWEEP = "sweep"
    TRIAL = "trial"


def follow_until_done(run_id: str, get_status: Callable[[], str], follower: Any, stream: TextIO,
                      timeout: float | None, on_status: Callable[[str], None] | None,
                      first: float = 0.02, most: float = 0.25) -> str:
    """Poll ``get_status`` (every ``first`` s, backing off to ``most``) until the run ends, pumping
    ``follower``'s new output into ``stream`` and telling ``on_status`` of each change; the final
    status. TimeoutError after ``timeout`` s."""
    deadline = None if timeout is None else time.time() + timeout
    delay, last = first, None
    while True:
        status = get_status()
        if status != last and on_status is not None:
            on_status(status)
        last = status
        if follower is not None:
            follower.pump(stream)
        if status in TERMINAL_VALUES:
            return status
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"run {run_id} still {status} after {timeout} s")
        time.sleep(delay)
        delay = min(delay * 1.5, most)
