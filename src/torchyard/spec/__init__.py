"""Job descriptions: JobSpec and the estimators/YAML that compile to it. No I/O."""

from torchyard.spec.estimators import (
    Environment,
    Gloo,
    Mpi,
    MpiConfiguration,
    Nccl,
    PyTorch,
    PyTorchConfiguration,
    ScriptRunConfig,
    flatten_script_params,
)
from torchyard.spec.job import DistributionSpec, EnvironmentSpec, JobSpec, build_job_spec

__all__ = [
    "DistributionSpec",
    "Environment",
    "EnvironmentSpec",
    "Gloo",
    "JobSpec",
    "Mpi",
    "MpiConfiguration",
    "Nccl",
    "PyTorch",
    "PyTorchConfiguration",
    "ScriptRunConfig",
    "build_job_spec",
    "flatten_script_params",
]
