"""``azureml.core.dataset``: ``Dataset`` (file datasets, versioned: torchyard.data.datasets)."""

from torchyard.azure.dataset import Dataset, FileDataset

__all__ = ["Dataset", "FileDataset"]
