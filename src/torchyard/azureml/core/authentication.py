"""``azureml.core.authentication``: Azure's login objects, accepted and not used (a local workspace
has no login; a team server uses its API token: ``torchyard login``)."""

from typing import Any


class _Authentication:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class InteractiveLoginAuthentication(_Authentication):
    """Accepted and not used."""


class ServicePrincipalAuthentication(_Authentication):
    """Accepted and not used."""


class MsiAuthentication(_Authentication):
    """Accepted and not used."""


class AzureCliAuthentication(_Authentication):
    """Accepted and not used."""


__all__ = ["AzureCliAuthentication", "InteractiveLoginAuthentication", "MsiAuthentication",
           "ServicePrincipalAuthentication"]
