"""``azureml.core.conda_dependencies``: ``CondaDependencies`` (see :mod:`torchyard.spec.conda`)."""

from torchyard.spec.conda import CondaDependencies

__all__ = ["CondaDependencies"]
