"""``azureml.data``: ``FileDataset`` and the consumption config a run's input is made of."""

from torchyard.azure.dataset import DatasetConsumptionConfig, FileDataset

__all__ = ["DatasetConsumptionConfig", "FileDataset"]
