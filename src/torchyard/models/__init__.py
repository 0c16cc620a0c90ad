"""The model registry and deployment SDK (L5): ``Model``, ``InferenceConfig``, ``LocalWebservice``,
``Webservice`` (Azure ML v1 shapes). Loaded lazily; nothing heavy is imported here."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Endpoint": "torchyard.models.endpoint",
    "Model": "torchyard.models.model",
    "InferenceConfig": "torchyard.models.webservice",
    "LocalWebservice": "torchyard.models.webservice",
    "LocalWebserviceDeploymentConfiguration": "torchyard.models.webservice",
    "Webservice": "torchyard.models.webservice",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'torchyard.models' has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
