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
ACTIVE = frozenset(RunStatus) - TERMINAL
# A RunStatus is a str: the stored strings are members of these sets too
TERMINAL_VALUES = TERMINAL
ACTIVE_VALUES = ACTIVE


class RunKind(enum.StrEnum):
    """What a run row is: an ordinary run, a sweep's parent, or one of its trials."""

    RUN = "run"
    SWEEP = "sweep"
    TRIAL = "trial"
