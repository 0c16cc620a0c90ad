"""``azureml.core.compute``: compute targets (see :mod:`torchyard.azure.compute`)."""

from torchyard.azure.compute import AmlCompute, ComputeTarget, RemoteCompute

__all__ = ["AmlCompute", "ComputeTarget", "RemoteCompute"]
