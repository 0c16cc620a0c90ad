"""``azureml.core.runconfig``: the distributed job configurations.

``DEFAULT_CPU_IMAGE`` and ``DEFAULT_GPU_IMAGE`` are None: torchyard runs no containers, and an
environment's ``docker.base_image`` accepts None only."""

from torchyard.spec.estimators import MpiConfiguration, PyTorchConfiguration

DEFAULT_CPU_IMAGE = None
DEFAULT_GPU_IMAGE = None

__all__ = ["DEFAULT_CPU_IMAGE", "DEFAULT_GPU_IMAGE", "MpiConfiguration", "PyTorchConfiguration"]
