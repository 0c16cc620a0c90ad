"""``azureml.train.hyperdrive``: sweeps (see :mod:`torchyard.hyperdrive`)."""

from torchyard.hyperdrive import *  # noqa: F403
from torchyard.hyperdrive import __all__  # noqa: F401
