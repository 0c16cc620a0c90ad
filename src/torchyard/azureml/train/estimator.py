"""``azureml.train.estimator``: ``Estimator`` is the ``PyTorch`` estimator's shape here."""

from torchyard.spec.estimators import PyTorch as Estimator

__all__ = ["Estimator"]
