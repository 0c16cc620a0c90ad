"""``azureml.core.model``: ``Model`` and ``InferenceConfig``."""

from torchyard.models.model import Model
from torchyard.models.webservice import InferenceConfig

__all__ = ["InferenceConfig", "Model"]
