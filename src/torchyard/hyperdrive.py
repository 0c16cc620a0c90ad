"""Hyperparameter sweeps, under the names Azure ML's ``azureml.train.hyperdrive`` uses::

    from torchyard.hyperdrive import (HyperDriveConfig, RandomParameterSampling, BanditPolicy,
                                      PrimaryMetricGoal, choice, uniform)

Everything here is also exported from ``torchyard`` itself. See :mod:`torchyard.sweeps` for how a
sweep runs, and each policy's docstring for its exact semantics.
"""

from torchyard.sweeps.config import HyperDriveConfig, PrimaryMetricGoal
from torchyard.sweeps.expressions import (
    BayesianParameterSampling,
    GridParameterSampling,
    HyperParameterSampling,
    RandomParameterSampling,
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from torchyard.sweeps.policies import (
    BanditPolicy,
    EarlyTerminationPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)
from torchyard.sweeps.run import HyperDriveRun

__all__ = [
    "BanditPolicy",
    "BayesianParameterSampling",
    "EarlyTerminationPolicy",
    "GridParameterSampling",
    "HyperDriveConfig",
    "HyperDriveRun",
    "HyperParameterSampling",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "PrimaryMetricGoal",
    "RandomParameterSampling",
    "TruncationSelectionPolicy",
    "choice",
    "loguniform",
    "lognormal",
    "normal",
    "qloguniform",
    "qlognormal",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]
