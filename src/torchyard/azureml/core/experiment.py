"""``azureml.core.experiment``: ``Experiment``."""

from torchyard.experiment import Experiment

__all__ = ["Experiment"]
