"""torchyard: run PyTorch training scripts as tracked runs, on this machine or a cluster.

The public API is exactly ``__all__``; everything else is internal.
"""

from torchyard.errors import (
    ComputeError,
    NotFoundError,
    NotSupportedError,
    RunFailedError,
    SpecError,
    TorchyardError,
    WorkspaceError,
)
from torchyard.run import Experiment, Run
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
from torchyard.status import RunStatus
from torchyard.workspace.workspace import Workspace

__version__ = "0.1.0"

__all__ = [
    "ComputeError",
    "Environment",
    "Experiment",
    "Gloo",
    "JobSpec",
    "Mpi",
    "MpiConfiguration",
    "Nccl",
    "NotFoundError",
    "NotSupportedError",
    "PyTorch",
    "PyTorchConfiguration",
    "Run",
    "RunFailedError",
    "RunStatus",
    "ScriptRunConfig",
    "SpecError",
    "TorchyardError",
    "Workspace",
    "__version__",
]
