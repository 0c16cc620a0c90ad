"""``azureml.train.dnn``: the ``PyTorch`` estimator and its distribution objects."""

from torchyard.spec.estimators import Gloo, Mpi, Nccl, PyTorch

__all__ = ["Gloo", "Mpi", "Nccl", "PyTorch"]
