"""``azureml.core.run``: ``Run``."""

from torchyard.run import Run

__all__ = ["Run"]
