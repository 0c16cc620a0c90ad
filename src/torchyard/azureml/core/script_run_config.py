"""``azureml.core.script_run_config``: ``ScriptRunConfig``."""

from torchyard.spec.estimators import ScriptRunConfig

__all__ = ["ScriptRunConfig"]
