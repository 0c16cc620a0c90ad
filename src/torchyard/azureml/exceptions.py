"""``azureml.exceptions``: Azure's exception names, as torchyard's."""

from torchyard.azure.compute import ComputeTargetException
from torchyard.azure.workspace import UserErrorException
from torchyard.errors import TorchyardError as AzureMLException
from torchyard.models.webservice import WebserviceError as WebserviceException

__all__ = ["AzureMLException", "ComputeTargetException", "UserErrorException", "WebserviceException"]
