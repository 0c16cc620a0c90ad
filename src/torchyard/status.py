"""Run statuses. Terminal ones never change again."""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    CANCEL_REQUESTED = "CancelRequested"
    NOT_RESPONDING = "NotResponding"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)
ACTIVE_VALUES = frozenset(s.value for s in RunStatus) - TERMINAL_VALUES


class RunKind(enum.StrEnum):
    """What a run row is: an ordinary run, a sweep's parent, or one of its trials."""

    RUN = "run"
    SWEEP = "sweep"
    TRIAL = "trial"
