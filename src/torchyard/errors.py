"""The one exception tree of torchyard.

::

    TorchyardError                      root: catch this to catch everything torchyard raises
    ├── SpecError                       a job description is invalid (names the field)
    │   └── NotSupportedError           valid, but its machinery does not exist yet here
    ├── WorkspaceError                  the workspace or its store cannot be opened / used
    │   └── NotFoundError               an unknown run, experiment, compute target or file
    ├── ComputeError                    a compute target could not place or run a job
    ├── DataError                       data could not be read or written (names the datastore or URL)
    └── RunFailedError                  raised by ``wait_for_completion(raise_on_error=True)``

Every exception carries its context as attributes (``field``, ``run_id``...) and renders as one
line that says what is wrong and what to do, which is what the CLI prints.
"""

from __future__ import annotations

from typing import Any


class TorchyardError(Exception):
    """Root of every error torchyard raises on purpose."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context
        for key, value in context.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


class SpecError(TorchyardError, ValueError):
    """A job description is invalid. ``field`` names the offending parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


class NotSupportedError(SpecError):
    """A valid request whose machinery is not available (yet) on this installation."""


class WorkspaceError(TorchyardError):
    """The workspace, its store or its files cannot be used."""


class NotFoundError(WorkspaceError, LookupError):
    """An unknown name: a run id, experiment, compute target, file."""


class ComputeError(TorchyardError):
    """A compute target failed to place or run a job."""


class RunFailedError(TorchyardError):
    """A run ended Failed (or Canceled) while the caller asked to raise on error."""


class DataError(TorchyardError):
    """Data could not be read or written: names the datastore or URL and what is wrong."""
