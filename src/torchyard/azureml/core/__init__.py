"""``azureml.core``: the workspace, experiments, runs, environments, job configurations, models."""

from typing import Any

from torchyard.azure.dataset import Dataset
from torchyard.azure.widgets import VERSION
from torchyard.data.datastore import Datastore
from torchyard.experiment import Experiment
from torchyard.models.model import Model
from torchyard.models.webservice import Webservice
from torchyard.run import Run
from torchyard.sdk import Workspace
from torchyard.spec.estimators import Environment, ScriptRunConfig

from torchyard.azure.compute import ComputeTarget  # isort: skip

_SUBMODULES = ("authentication", "compute", "compute_target", "conda_dependencies", "dataset", "datastore", "environment",
               "experiment", "model", "run", "runconfig", "script_run_config", "webservice", "workspace")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'torchyard.azureml.core' has no attribute {name!r}")


__all__ = ["VERSION", "ComputeTarget", "Dataset", "Datastore", "Environment", "Experiment", "Model", "Run", "ScriptRunConfig",
           "Webservice", "Workspace"]
