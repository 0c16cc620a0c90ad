"""MLflow tracking into torchyard runs: the tracking-store plugin for ``torchyard:`` URIs.

MLflow finds it through its own plugin point, the ``mlflow.tracking_store`` entry-point group
(``torchyard = "torchyard.integrations._mlflow_store:tracking_store"`` in torchyard's pyproject), so nothing is
patched. Two modes, chosen when MLflow builds the store:

* **Inside a torchyard run** (the env contract set ``MLFLOW_TRACKING_URI=torchyard://<workspace>`` and
  ``MLFLOW_RUN_ID=<run id>``): every MLflow run the script starts *is* the torchyard run. Metrics go,
  with their steps and times, through the rank's journal exactly as ``run.log`` does; params become
  properties, tags become tags (MLflow's own ``mlflow.*`` system tags given at run creation are not
  copied), and artifacts are written under the run's ``outputs/`` (this node's, so they follow the
  node's outputs rule). The store never opens the workspace database.
* **Outside a run** (``mlflow.set_tracking_uri("torchyard:///path/to/workspace")``): each MLflow run
  becomes a new torchyard run in that workspace, written straight into its store; artifacts land in
  the run's ``outputs/``. Ending the MLflow run ends the torchyard run (FINISHED → Completed, FAILED
  → Failed, KILLED → Canceled); a process that dies without ending it is noticed like a dead
  supervisor (the run turns Failed).

In both modes MLflow 3's logged models (``mlflow.<flavor>.log_model``, ``models:/<model_id>``) are kept
as a JSON record beside the model folder, which is a run artifact (``outputs/<name>``)
(``_mlflow_models``). The same URI is MLflow's model-registry URI: ``mlflow.register_model`` adds a
version to the workspace's model registry (``_mlflow_registry``, the ``mlflow.model_registry_store``
entry point).

This module imports nothing from MLflow itself; the store classes (``_mlflow_store``) are imported
when MLflow asks for a store.
"""

from __future__ import annotations

import os
from typing import Any

SCHEME = "torchyard"


def in_run_environment(store_uri: str, environ: Any = None) -> bool:
    """Whether a store for ``store_uri`` is the in-run store: this process is a rank of a torchyard
    run and the URI names that run's workspace (or none)."""
    env = os.environ if environ is None else environ
    if not (env.get("TORCHYARD_RUN_ID") and env.get("TORCHYARD_JOURNAL_DIR")):
        return False
    path = workspace_path(store_uri)
    if not path:
        return True
    own = env.get("TORCHYARD_WORKSPACE", "")
    return bool(own) and os.path.abspath(path) == os.path.abspath(own)


def workspace_path(store_uri: str) -> str:
    """The folder a ``torchyard:`` URI names (``torchyard:///abs/path``, ``torchyard:rel/path``), or ''."""
    rest = store_uri[len(SCHEME) + 1 :] if store_uri.startswith(SCHEME + ":") else store_uri
    if rest.startswith("//"):
        rest = rest[2:]
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ValueError(f"{store_uri!r}: a torchyard URI names a local folder (torchyard:///path)")
        return "/" + path if path else ""
    return rest
