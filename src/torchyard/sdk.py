"""The SDK's :class:`Workspace` (L5): the workspace folder (persistence, L2) plus the views the SDK
hangs on it — experiments, runs, compute targets — and submit, which goes through the runtime's one
submit path."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torchyard.workspace.workspace import WorkspaceFolder

if TYPE_CHECKING:
    from torchyard.azure.compute import ComputeTargets
    from torchyard.experiment import Experiment
    from torchyard.run import Run
    from torchyard.spec.job import JobSpec


class Workspace(WorkspaceFolder):
    """Where runs, metrics and artifacts live.

    ``Workspace()`` finds ``./.torchyard`` (or a parent's), else creates it in the working directory.
    ``Workspace(path=...)`` or ``TORCHYARD_WORKSPACE`` choose the folder; ``db_url=...`` or
    ``TORCHYARD_DB_URL`` put the metadata store in PostgreSQL (or any SQLAlchemy URL) instead of SQLite.

    ``Workspace(url="http://HOST:PORT", token=...)`` (or ``TORCHYARD_SERVER``, or a URL in
    ``TORCHYARD_WORKSPACE``) is a team server's workspace: the same calls, over HTTP (``token``
    defaults to ``TORCHYARD_TOKEN`` or what ``torchyard login`` saved).

    Azure ML's forms work too: ``Workspace.from_config(path=None)`` (Azure's ``config.json``),
    ``Workspace.get(name, ...)``, ``Workspace.create(name, ..., exist_ok=False)`` and
    ``Workspace(subscription_id, resource_group, workspace_name)`` open the default workspace under
    that name (see :mod:`torchyard.azure.workspace`); ``ws.name``, ``subscription_id``,
    ``resource_group``, ``location``, ``write_config()``, ``get_details()``, ``ws.models``,
    ``ws.webservices``, ``ws.compute_targets``, ``ws.environments``, ``ws.datastores``. ``auth``
    objects are accepted and not used (a local workspace has no login; a server uses its token).
    """

    def __new__(cls, path: Any = None, resource_group: str | None = None, workspace_name: str | None = None, *,
                db_url: str | None = None, url: str | None = None, token: str | None = None,
                subscription_id: str | None = None, auth: Any = None, **azure: Any) -> Any:
        url = url or server_url(path if workspace_name is None else None)
        if url:
            from torchyard.remote.workspace import RemoteWorkspace  # noqa: PLC0415

            remote = RemoteWorkspace(url, token)
            if workspace_name is not None:
                _set_identity(remote, workspace_name, subscription_id or path, resource_group)
            return remote
        return super().__new__(cls)

    def __init__(self, path: Any = None, resource_group: str | None = None, workspace_name: str | None = None, *,
                 db_url: str | None = None, url: str | None = None, token: str | None = None,
                 subscription_id: str | None = None, auth: Any = None, **azure: Any) -> None:
        unknown = sorted(set(azure) - {"_location", "_disable_service_check", "_workspace_id", "_cloud", "sku"})
        if unknown:
            raise TypeError(f"Workspace() got an unexpected keyword argument {unknown[0]!r}")
        if workspace_name is not None:  # Azure's Workspace(subscription_id, resource_group, workspace_name)
            subscription_id = subscription_id or (path if isinstance(path, str) else None)
            path = None
        super().__init__(path, db_url=db_url)
        if workspace_name is not None:
            from torchyard.azure.workspace import claim  # noqa: PLC0415

            claim(self.path, workspace_name, subscription_id=subscription_id, resource_group=resource_group,
                  location=azure.get("_location"))

    # ---- Azure ML's identity and config.json ----------------------------------------------------

    @classmethod
    def from_config(cls, path: Any = None, auth: Any = None, _logger: Any = None, _file_name: str | None = None) -> Any:
        """The workspace Azure's ``config.json`` names (searched in ``path`` or the working directory,
        their ``.azureml/`` and ``aml_config/`` folders, and every parent): its ``torchyard`` key (a
        team server URL or a folder), else the ``.torchyard`` folder of the project holding it."""
        from torchyard.azure import workspace as az  # noqa: PLC0415

        config_path = az.find_config(path, _file_name)
        data = az.read_config(config_path)
        server, folder = az.workspace_location(config_path, data)
        ws: Any = cls(url=server) if server else cls(folder)
        _set_identity(ws, data.get("workspace_name"), data.get("subscription_id"), data.get("resource_group"),
                      data.get("location"))
        ws._config_path = config_path
        return ws

    @classmethod
    def get(cls, name: str, auth: Any = None, subscription_id: str | None = None, resource_group: str | None = None,
            location: str | None = None, cloud: str = "AzureCloud", id: str | None = None) -> Any:  # noqa: A002
        """The default workspace (``TORCHYARD_WORKSPACE``, ``TORCHYARD_SERVER``, or ``./.torchyard`` or a
        parent's) under the name ``name``; UserErrorException when it is called otherwise."""
        from torchyard.azure.workspace import UserErrorException, read_identity  # noqa: PLC0415

        ws = cls()
        if not getattr(ws, "is_remote", False):
            current = read_identity(ws.path).get("name")
            if current and current != name:
                raise UserErrorException(f"no workspace {name!r} here: the workspace at {ws.path} is called {current!r}")
        _set_identity(ws, name, subscription_id, resource_group, location)
        return ws

    @classmethod
    def create(cls, name: str, auth: Any = None, subscription_id: str | None = None, resource_group: str | None = None,
               location: str | None = None, create_resource_group: bool = True, sku: str = "basic",
               tags: dict[str, str] | None = None, friendly_name: str | None = None, exist_ok: bool = False,
               show_output: bool = True, **azure: Any) -> Any:
        """Create the workspace folder ``TORCHYARD_WORKSPACE`` or ``./.torchyard`` (never a parent's) called
        ``name``. An existing one called ``name`` is returned with ``exist_ok=True``, else refused.
        Parameters naming Azure resources (storage_account, key_vault, container_registry, ...) are
        refused: a self-hosted workspace has its own."""
        from torchyard.azure import workspace as az  # noqa: PLC0415

        az.refuse_cloud_only(azure)
        path = os.environ.get("TORCHYARD_WORKSPACE") or os.path.join(os.getcwd(), ".torchyard")
        existed = not path.startswith(("http://", "https://")) and os.path.isfile(os.path.join(path, "workspace.json"))
        ws = cls(path)
        if not getattr(ws, "is_remote", False):
            current = az.read_identity(ws.path).get("name")
            if existed and current == name and not exist_ok:
                raise az.UserErrorException(f"workspace {name!r} already exists at {ws.path}; pass exist_ok=True to use it")
            if current and current != name:
                raise az.UserErrorException(f"the workspace at {ws.path} is called {current!r}; set TORCHYARD_WORKSPACE "
                                            f"to another folder to create {name!r}")
        _set_identity(ws, name, subscription_id, resource_group, location)
        if show_output:
            print(f"Deployed workspace {name!r} at {ws.path}")
        return ws

    def _identity(self) -> dict[str, Any]:
        from torchyard.azure.workspace import read_identity  # noqa: PLC0415

        return {**read_identity(self.path), **getattr(self, "_azure_identity", {})}

    @property
    def name(self) -> str:
        """Azure's workspace name: the one recorded when it was first named, else its project folder's name."""
        from torchyard.azure.workspace import default_name  # noqa: PLC0415

        return str(self._identity().get("name") or default_name(self.path))

    @property
    def subscription_id(self) -> str | None:
        """The subscription id from ``config.json`` or the call that named the workspace (a label here)."""
        value = self._identity().get("subscription_id")
        return None if value is None else str(value)

    @property
    def resource_group(self) -> str | None:
        """The resource group from ``config.json`` or the call that named the workspace (a label here)."""
        value = self._identity().get("resource_group")
        return None if value is None else str(value)

    @property
    def location(self) -> str:
        """The location recorded for the workspace, else ``local``."""
        return str(self._identity().get("location") or "local")

    @property
    def tags(self) -> dict[str, str]:
        """The workspace's tags (recorded in ``azureml.json``)."""
        return dict(self._identity().get("tags") or {})

    def get_details(self) -> dict[str, Any]:
        """Azure's workspace details, for a self-hosted workspace."""
        return {"id": self.path, "name": self.name, "location": self.location, "type": "Microsoft.MachineLearningServices/workspaces",
                "subscriptionId": self.subscription_id, "resourceGroup": self.resource_group,
                "workspaceid": self.path, "description": "torchyard workspace", "friendlyName": self.name,
                "storageAccount": None, "containerRegistry": None, "keyVault": None, "applicationInsights": None,
                "path": self.path, "db_url": self.db_url}

    def write_config(self, path: str | None = None, file_name: str | None = None) -> str:
        """Write Azure's ``config.json`` naming this workspace (into ``path``/.azureml/, default the
        working directory), with the ``torchyard`` key pointing at this folder; its path."""
        return _write_config(self, path, file_name)

    @property
    def models(self) -> dict[str, Any]:
        """``{name: the latest version's Model}`` (Azure's ``ws.models``)."""
        from torchyard.models.model import Model  # noqa: PLC0415

        out: dict[str, Any] = {}
        for model in Model.list(self, latest=True):
            out.setdefault(model.name, model)
        return out

    @property
    def webservices(self) -> dict[str, Any]:
        """``{name: Webservice}`` (Azure's ``ws.webservices``)."""
        from torchyard.models.webservice import Webservice  # noqa: PLC0415

        return {svc.name: svc for svc in Webservice.list(self)}

    @property
    def experiments(self) -> dict[str, Experiment]:
        """The workspace's experiments, by name."""
        from torchyard.experiment import Experiment  # noqa: PLC0415

        return {name: Experiment(self, name) for name in self.store.list_experiments()}

    def get_run(self, run_id: str) -> Run:
        """The run with this id, in any experiment; NotFoundError otherwise."""
        from torchyard.experiment import Experiment  # noqa: PLC0415
        from torchyard.run import Run  # noqa: PLC0415

        row = self.store.get_run(run_id)
        return Run(Experiment(self, row["experiment"]), run_id)

    @property
    def compute_targets(self) -> ComputeTargets:
        """The compute targets attached to this workspace (``ComputeTarget.attach``), also Azure's
        dict of name → ``ComputeTarget`` (``local`` included)."""
        from torchyard.azure.compute import ComputeTargets  # noqa: PLC0415 - targets load lazily

        return ComputeTargets(self)

    def submit(self, experiment: str, spec: JobSpec, *, tags: dict[str, str] | None = None,
               parent_id: str | None = None, run_id: str | None = None, created_by: str | None = None) -> str:
        """Validate, snapshot, record the run (NotStarted → Queued) and start its supervisor; its id.
        ``created_by``: the team server's user submitting it."""
        from torchyard.runtime.submit import submit_run  # noqa: PLC0415

        return submit_run(self, experiment, spec, tags=tags, parent_id=parent_id, run_id=run_id,
                          created_by=created_by)

    def record_run(self, experiment: str, spec: JobSpec, *, tags: dict[str, str] | None = None,
                   parent_id: str | None = None, run_id: str | None = None) -> str:
        """Validate, snapshot and record a run without starting it (a test's or a tool's step)."""
        from torchyard.runtime.submit import record_run  # noqa: PLC0415

        return record_run(self, experiment, spec, tags=tags, parent_id=parent_id, run_id=run_id)


def server_url(path: Any = None) -> str | None:
    """The team server a workspace argument names: ``path`` if it is an http(s) URL, else (without a
    path) ``TORCHYARD_SERVER`` or an http(s) ``TORCHYARD_WORKSPACE``; None for a folder."""
    if path is not None:
        text = os.fspath(path) if not isinstance(path, str) else path
        return text if text.startswith(("http://", "https://")) else None
    for name in ("TORCHYARD_SERVER", "TORCHYARD_WORKSPACE"):
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return value
    return None


def _set_identity(ws: Any, name: str | None, subscription_id: str | None = None, resource_group: str | None = None,
                  location: str | None = None) -> None:
    """Give ``ws`` Azure's identity: recorded in a local workspace the first time (see
    :func:`torchyard.azure.workspace.claim`), kept on the object for this session either way."""
    identity = {k: v for k, v in (("name", name), ("subscription_id", subscription_id),
                                  ("resource_group", resource_group), ("location", location)) if v is not None}
    if getattr(ws, "is_remote", False):
        for key, value in identity.items():
            setattr(ws, key, value)
        ws.location = identity.get("location", getattr(ws, "location", None) or "local")
        return
    from torchyard.azure.workspace import claim  # noqa: PLC0415

    claim(ws.path, name, subscription_id=subscription_id, resource_group=resource_group, location=location)
    ws._azure_identity = identity


def _write_config(ws: Any, path: str | None, file_name: str | None) -> str:
    import json  # noqa: PLC0415

    folder = os.path.join(os.path.abspath(path or os.getcwd()), ".azureml")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, file_name or "config.json")
    data = {"subscription_id": ws.subscription_id, "resource_group": ws.resource_group, "workspace_name": ws.name,
            "torchyard": ws.url if getattr(ws, "is_remote", False) else ws.path}
    with open(target, "w") as fh:
        json.dump(data, fh, indent=4)
    return target
