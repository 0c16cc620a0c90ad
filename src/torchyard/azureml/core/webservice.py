"""``azureml.core.webservice``: services and their deploy configurations."""

from torchyard.models.webservice import AciWebservice, AksWebservice, LocalWebservice, Webservice

__all__ = ["AciWebservice", "AksWebservice", "LocalWebservice", "Webservice"]
