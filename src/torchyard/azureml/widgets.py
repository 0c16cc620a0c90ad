"""``azureml.widgets``: ``RunDetails`` (a live ipywidgets widget in Jupyter, text elsewhere; see
:mod:`torchyard.azure.widgets`)."""

from torchyard.azure.widgets import RunDetails

__all__ = ["RunDetails"]
