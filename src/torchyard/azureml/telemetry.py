"""``azureml.telemetry``: ``set_diagnostics_collection`` (torchyard sends no telemetry)."""

from torchyard.azure.widgets import set_diagnostics_collection

__all__ = ["set_diagnostics_collection"]
