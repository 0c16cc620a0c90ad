"""torchyard: run PyTorch training scripts as tracked runs, on this machine or a cluster.

The public API is exactly ``__all__``; everything else is internal.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchyard.azure.compute import AmlCompute, ComputeTargetException
    from torchyard.compute.base import ComputeTarget
    from torchyard.compute.kubernetes import KubernetesCompute
    from torchyard.compute.ray import RayCompute
    from torchyard.compute.slurm import SlurmCompute
    from torchyard.data.datastore import Datastore
    from torchyard.data.references import DataReference
    from torchyard.errors import (
        ComputeError,
        NotFoundError,
        NotSupportedError,
        RunFailedError,
        SpecError,
        TorchyardError,
        WorkspaceError,
    )
    from torchyard.experiment import Experiment
    from torchyard.hyperdrive import (
        BanditPolicy,
        BayesianParameterSampling,
        GridParameterSampling,
        HyperDriveConfig,
        HyperDriveRun,
        MedianStoppingPolicy,
        NoTerminationPolicy,
        PrimaryMetricGoal,
        RandomParameterSampling,
        TruncationSelectionPolicy,
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
    from torchyard.models.endpoint import Endpoint
    from torchyard.models.model import Model
    from torchyard.models.webservice import (
        AciWebservice,
        AksWebservice,
        InferenceConfig,
        LocalWebservice,
        Webservice,
    )
    from torchyard.run import Run
    from torchyard.sdk import Workspace
    from torchyard.spec import (
        Environment,
        Gloo,
        JobSpec,
        Mpi,
        MpiConfiguration,
        Nccl,
        PyTorch,
        PyTorchConfiguration,
        ScriptRunConfig,
    )
    from torchyard.spec.conda import CondaDependencies
    from torchyard.status import RunStatus

# Loaded on first use, so `import torchyard` (and the CLI) stays fast.
_LAZY = {
    "AmlCompute": "torchyard.azure.compute",
    "ComputeTargetException": "torchyard.azure.compute",
    "AciWebservice": "torchyard.models.webservice",
    "AksWebservice": "torchyard.models.webservice",
    "CondaDependencies": "torchyard.spec.conda",
    "ComputeTarget": "torchyard.compute.base",
    "RayCompute": "torchyard.compute.ray",
    "KubernetesCompute": "torchyard.compute.kubernetes",
    "SlurmCompute": "torchyard.compute.slurm",
    "DataReference": "torchyard.data.references",
    "Datastore": "torchyard.data.datastore",
    "ComputeError": "torchyard.errors",
    "NotFoundError": "torchyard.errors",
    "NotSupportedError": "torchyard.errors",
    "RunFailedError": "torchyard.errors",
    "SpecError": "torchyard.errors",
    "TorchyardError": "torchyard.errors",
    "WorkspaceError": "torchyard.errors",
    "Experiment": "torchyard.experiment",
    "Endpoint": "torchyard.models.endpoint",
    "InferenceConfig": "torchyard.models.webservice",
    "LocalWebservice": "torchyard.models.webservice",
    "Webservice": "torchyard.models.webservice",
    "Model": "torchyard.models.model",
    "Run": "torchyard.run",
    "Environment": "torchyard.spec",
    "Gloo": "torchyard.spec",
    "JobSpec": "torchyard.spec",
    "Mpi": "torchyard.spec",
    "MpiConfiguration": "torchyard.spec",
    "Nccl": "torchyard.spec",
    "PyTorch": "torchyard.spec",
    "PyTorchConfiguration": "torchyard.spec",
    "ScriptRunConfig": "torchyard.spec",
    "RunStatus": "torchyard.status",
    "Workspace": "torchyard.sdk",
    "BanditPolicy": "torchyard.hyperdrive",
    "BayesianParameterSampling": "torchyard.hyperdrive",
    "GridParameterSampling": "torchyard.hyperdrive",
    "HyperDriveConfig": "torchyard.hyperdrive",
    "HyperDriveRun": "torchyard.hyperdrive",
    "MedianStoppingPolicy": "torchyard.hyperdrive",
    "NoTerminationPolicy": "torchyard.hyperdrive",
    "PrimaryMetricGoal": "torchyard.hyperdrive",
    "RandomParameterSampling": "torchyard.hyperdrive",
    "TruncationSelectionPolicy": "torchyard.hyperdrive",
    "choice": "torchyard.hyperdrive",
    "loguniform": "torchyard.hyperdrive",
    "lognormal": "torchyard.hyperdrive",
    "normal": "torchyard.hyperdrive",
    "qloguniform": "torchyard.hyperdrive",
    "qlognormal": "torchyard.hyperdrive",
    "qnormal": "torchyard.hyperdrive",
    "quniform": "torchyard.hyperdrive",
    "randint": "torchyard.hyperdrive",
    "uniform": "torchyard.hyperdrive",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'torchyard' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "AciWebservice",
    "AksWebservice",
    "AmlCompute",
    "ComputeTargetException",
    "CondaDependencies",
    "BanditPolicy",
    "BayesianParameterSampling",
    "ComputeError",
    "ComputeTarget",
    "DataReference",
    "Datastore",
    "Endpoint",
    "Environment",
    "Experiment",
    "Gloo",
    "GridParameterSampling",
    "HyperDriveConfig",
    "HyperDriveRun",
    "InferenceConfig",
    "LocalWebservice",
    "JobSpec",
    "MedianStoppingPolicy",
    "Model",
    "Mpi",
    "MpiConfiguration",
    "Nccl",
    "NoTerminationPolicy",
    "NotFoundError",
    "NotSupportedError",
    "PrimaryMetricGoal",
    "PyTorch",
    "PyTorchConfiguration",
    "RayCompute",
    "KubernetesCompute",
    "RandomParameterSampling",
    "Run",
    "RunFailedError",
    "RunStatus",
    "ScriptRunConfig",
    "SlurmCompute",
    "SpecError",
    "TorchyardError",
    "TruncationSelectionPolicy",
    "Webservice",
    "Workspace",
    "WorkspaceError",
    "choice",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
    "__version__",
]
