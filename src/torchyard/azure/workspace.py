"""Azure ML's workspace identity and ``config.json``.

A torchyard workspace is a folder (or a team server); Azure's identity of it — ``name``,
``subscription_id``, ``resource_group``, ``location`` — is recorded in ``<workspace>/azureml.json``
the first time a notebook names it (``Workspace.from_config()``, ``Workspace.get/create``,
``Workspace(subscription_id, resource_group, workspace_name)``) and only reported afterwards.

``config.json`` is Azure's file::

    {"subscription_id": "...", "resource_group": "...", "workspace_name": "...",
     "torchyard": "http://team-server:8765"}          # optional: a server URL or a folder
    # or "torchyard": {"url": "http://..."} / {"path": "../shared/.torchyard"}

Without a ``torchyard`` key the workspace is ``TORCHYARD_WORKSPACE`` / ``TORCHYARD_SERVER`` when set,
else the ``.torchyard`` folder beside the project that holds ``config.json`` (the folder holding
it, or holding its ``.azureml/`` or ``aml_config/``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from torchyard.errors import NotSupportedError, WorkspaceError

CONFIG_FILE = "config.json"
CONFIG_DIRS = ("", ".azureml", "aml_config")
IDENTITY_FILE = "azureml.json"  # shared with torchyard.azure.compute (``compute_map``)
IDENTITY_KEYS = ("name", "subscription_id", "resource_group", "location")
DEFAULT_LOCATION = "local"

#: Workspace.create's parameters that name Azure resources; anything but their default is refused
CREATE_CLOUD_ONLY = ("storage_account", "key_vault", "app_insights", "container_registry", "adb_workspace",
                     "primary_user_assigned_identity", "cmk_keyvault", "resource_cmk_uri",
                     "private_endpoint_config", "user_assigned_identity_for_cmk_encryption",
                     "default_cpu_compute_target", "default_gpu_compute_target")


class UserErrorException(WorkspaceError):
    """Azure's ``azureml.exceptions.UserErrorException``: a missing or invalid ``config.json``, a
    workspace that is not there or already exists."""


def find_config(path: str | os.PathLike[str] | None = None, file_name: str | None = None) -> str:
    """The ``config.json`` Azure's ``Workspace.from_config`` would read: ``path`` itself when it is a
    file, else the first of ``DIR/config.json``, ``DIR/.azureml/config.json``,
    ``DIR/aml_config/config.json`` from ``path`` (default: the working directory) up to the root."""
    name = file_name or CONFIG_FILE
    start = os.path.abspath(os.fspath(path) if path is not None else os.getcwd())
    if os.path.isfile(start):
        return start
    here, searched = start, []
    while True:
        for sub in CONFIG_DIRS:
            candidate = os.path.join(here, sub, name)
            if os.path.isfile(candidate):
                return candidate
        searched.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    raise UserErrorException(
        f"We could not find {name} in {start} or in its parent directories (nor in their .azureml/ or "
        "aml_config/ folders). Write one with ws.write_config(), or give from_config(path=...)")


def read_config(config_path: str) -> dict[str, Any]:
    try:
        with open(config_path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as err:
        raise UserErrorException(f"{config_path} is not a readable JSON file: {err}") from None
    if not isinstance(data, dict):
        raise UserErrorException(f"{config_path}: expected a JSON object")
    missing = [k for k in ("subscription_id", "resource_group", "workspace_name") if not data.get(k)]
    if missing and not data.get("torchyard"):
        raise UserErrorException(f"{config_path} has no {', '.join(missing)}; Azure's config.json names the "
                                 "subscription_id, resource_group and workspace_name")
    return data


def project_root(config_path: str) -> str:
    folder = os.path.dirname(os.path.abspath(config_path))
    return os.path.dirname(folder) if os.path.basename(folder) in (".azureml", "aml_config") else folder


def workspace_location(config_path: str, data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(server URL, folder) of the workspace ``config.json`` names; both None: the default one."""
    value = data.get("torchyard")
    if value is None:
        if os.environ.get("TORCHYARD_WORKSPACE") or os.environ.get("TORCHYARD_SERVER"):
            return None, None
        return None, os.path.join(project_root(config_path), ".torchyard")
    if isinstance(value, str):
        value = {"url": value} if value.startswith(("http://", "https://")) else {"path": value}
    if not isinstance(value, dict) or not (value.get("url") or value.get("path")):
        raise UserErrorException(f"{config_path}: \"torchyard\" must be a server URL, a folder, or "
                                 "{\"url\": ...} / {\"path\": ...}")
    if value.get("url"):
        return str(value["url"]), None
    folder = os.path.expanduser(str(value["path"]))
    if not os.path.isabs(folder):
        folder = os.path.join(project_root(config_path), folder)
    return None, os.path.abspath(folder)


def read_identity(workspace_path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(workspace_path, IDENTITY_FILE)) as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise WorkspaceError(f"{os.path.join(workspace_path, IDENTITY_FILE)} is unreadable: {err}") from None


def write_identity(workspace_path: str, **identity: Any) -> dict[str, Any]:
    """Merge ``identity`` (None values left out) into the workspace's record; the record."""
    data = read_identity(workspace_path)
    data.update({k: v for k, v in identity.items() if v is not None})
    path = os.path.join(workspace_path, IDENTITY_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)
    return data


def claim(workspace_path: str, name: str | None, *, subscription_id: str | None = None,
          resource_group: str | None = None, location: str | None = None) -> dict[str, Any]:
    """Record the Azure identity of a workspace the first time it is named; a workspace already
    called otherwise is refused (UserErrorException), as Azure's lookup by name would fail."""
    current = read_identity(workspace_path)
    if name and current.get("name") and current["name"] != name:
        raise UserErrorException(f"the workspace at {workspace_path} is called {current['name']!r}, not {name!r} "
                                 "(its name is in azureml.json; each workspace folder has one name)")
    if name and not current.get("name"):
        return write_identity(workspace_path, name=name, subscription_id=subscription_id,
                              resource_group=resource_group, location=location)
    return current


def refuse_cloud_only(params: dict[str, Any]) -> None:
    for key in CREATE_CLOUD_ONLY:
        if params.get(key) is not None:
            raise NotSupportedError(key, "names an Azure resource; a self-hosted workspace has its own store, "
                                         "artifacts and compute targets: leave it out")
    if params.get("hbi_workspace"):
        raise NotSupportedError("hbi_workspace", "Azure's high-business-impact mode has no meaning here; leave it out")


def default_name(workspace_path: str) -> str:
    """A workspace never named gets its project folder's name."""
    parent = os.path.dirname(os.path.abspath(workspace_path))
    return os.path.basename(parent) or "workspace"
