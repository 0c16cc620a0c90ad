"""Azure ML v1's module tree, over torchyard: ``azureml.X`` is ``torchyard.azureml.X``.

A notebook migrates by changing its import lines only::

    import azureml.core                       →  from torchyard import azureml
    from azureml.core import Workspace         →  from torchyard.azureml.core import Workspace
    from azureml.core.compute import AmlCompute →  from torchyard.azureml.core.compute import AmlCompute
    from azureml.train.dnn import PyTorch      →  from torchyard.azureml.train.dnn import PyTorch

Submodules load on first use (``azureml.core.VERSION`` works after ``from torchyard import azureml``).
See docs/guides/azure-migration.md for every name and its meaning here.
"""

from typing import Any

_SUBMODULES = ("core", "data", "exceptions", "telemetry", "train", "widgets")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'torchyard.azureml' has no attribute {name!r}")
