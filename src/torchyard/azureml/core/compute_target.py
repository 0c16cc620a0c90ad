"""``azureml.core.compute_target``: ``ComputeTargetException``."""

from torchyard.azure.compute import ComputeTargetException

__all__ = ["ComputeTargetException"]
