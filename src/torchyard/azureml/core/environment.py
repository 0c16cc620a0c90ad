"""``azureml.core.environment``: ``Environment`` and its sections."""

from torchyard.spec.conda import CondaDependencies
from torchyard.spec.estimators import DockerSection, Environment, PythonSection

__all__ = ["CondaDependencies", "DockerSection", "Environment", "PythonSection"]
