"""``azureml.widgets``: ``RunDetails`` (a plain-text follower for now, see :mod:`torchyard.azure.widgets`)."""

from torchyard.azure.widgets import RunDetails

__all__ = ["RunDetails"]
