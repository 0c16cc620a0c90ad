"""``azureml.core.workspace``: ``Workspace``."""

from torchyard.sdk import Workspace

__all__ = ["Workspace"]
