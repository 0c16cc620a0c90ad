"""``azureml.core.datastore``: ``Datastore``."""

from torchyard.data.datastore import Datastore

__all__ = ["Datastore"]
