"""Azure's notebook boilerplate: ``VERSION``, ``set_diagnostics_collection`` and ``RunDetails``.

``RunDetails(run).show()`` is, for now, the plain-text form of Azure's widget: it follows the run
live until it ends (a run's status and rank 0's output, then the execution summary; a sweep's
trials as they start, log the primary metric and end, then the best trial) and returns. It blocks
the calling cell while it follows; a Jupyter widget (ipywidgets, non-blocking) is not built yet.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import torchyard

#: what Azure notebooks print as ``azureml.core.VERSION``: torchyard's version
VERSION = torchyard.__version__


def set_diagnostics_collection(send_diagnostics: bool = True, path: str | None = None, reset: bool = False) -> None:
    """Azure's telemetry opt-in. torchyard sends no telemetry at all, so there is nothing to turn on or
    off; the call is accepted and does nothing (documented, and no result depends on it)."""
    return None


class RunDetails:
    """``RunDetails(run_instance).show()``: follow a run or a sweep live, in text (see the module)."""

    def __init__(self, run_instance: Any) -> None:
        self.run_instance = run_instance

    def show(self, out: TextIO | None = None, timeout: float | None = None) -> None:
        """Print the run's progress until it ends (a failed run is reported, not raised)."""
        run = self.run_instance
        stream = out or sys.stdout
        stream.write(f"{type(run).__name__} {run.id} (experiment {run.experiment.name}): {run.get_status()}\n")
        run.wait_for_completion(show_output=True, raise_on_error=False, timeout=timeout, out=stream)
        stream.write(f"{run.id}: {run.get_status()}\n")
        stream.flush()

    def get_widget_data(self) -> dict[str, Any]:
        """What the widget shows, as data: status, details, rank 0's metrics (and a sweep's ranking)."""
        run = self.run_instance
        data: dict[str, Any] = {"run_id": run.id, "status": run.get_status(), "details": run.get_details()}
        if hasattr(run, "get_children_sorted_by_primary_metric"):
            data["children"] = run.get_children_sorted_by_primary_metric()
        else:
            data["metrics"] = run.get_metrics()
        return data
