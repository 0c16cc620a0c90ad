"""The Workspace: where everything lives.

Layout of a workspace folder (``.torchyard`` by default)::

    workspace.json        marker and settings (db_url when not the embedded SQLite)
    store.db              the embedded SQLite metadata store (WAL mode)
    runs/<run_id>/        each run's working folder: its code, outputs/, logs/, .torchyard-run/
    artifacts/<run_id>/   a run's artifacts, collected at Finalizing
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any

from torchyard.errors import SpecError, WorkspaceError

if TYPE_CHECKING:
    from torchyard.compute.registry import ComputeRegistry
    from torchyard.data.datastore import Datastore, DatastoreRegistry
    from torchyard.environments.registry import EnvironmentRegistry
    from torchyard.run import Experiment, Run
    from torchyard.spec.job import JobSpec
    from torchyard.workspace.snapshots import SnapshotStore
    from torchyard.workspace.store import Store

WORKSPACE_DIRNAME = ".torchyard"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def find_workspace(start: str | None = None) -> str | None:
    """The nearest ``.torchyard`` workspace at or above ``start`` (default: the working directory)."""
    here = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(here, WORKSPACE_DIRNAME)
        if os.path.isfile(os.path.join(candidate, "workspace.json")):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def check_name(name: str, what: str = "experiment") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(
            what, f"invalid name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


class Workspace:
    """Where runs, metrics and artifacts live.

    ``Workspace()`` finds ``./.torchyard`` (or a parent's), else creates it in the working directory.
    ``Workspace(path=...)`` or ``TORCHYARD_WORKSPACE`` choose the folder; ``db_url=...`` or
    ``TORCHYARD_DB_URL`` put the metadata store in PostgreSQL (or any SQLAlchemy URL) instead of SQLite.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, db_url: str | None = None) -> None:
        explicit = path if path is not None else os.environ.get("TORCHYARD_WORKSPACE")
        if explicit:
            folder = os.path.abspath(os.fspath(explicit))
            if os.path.basename(folder) != WORKSPACE_DIRNAME and os.path.isdir(os.path.join(folder, WORKSPACE_DIRNAME)):
                folder = os.path.join(folder, WORKSPACE_DIRNAME)
        else:
            folder = find_workspace() or os.path.join(os.getcwd(), WORKSPACE_DIRNAME)
        self.path = folder
        settings = self._open_settings(db_url or os.environ.get("TORCHYARD_DB_URL"))
        self.db_url: str = settings.get("db_url") or f"sqlite:///{os.path.join(folder, 'store.db')}"
        self._store: Store | None = None

    def _open_settings(self, db_url: str | None) -> dict[str, Any]:
        marker = os.path.join(self.path, "workspace.json")
        try:
            os.makedirs(os.path.join(self.path, "runs"), exist_ok=True)
            os.makedirs(os.path.join(self.path, "artifacts"), exist_ok=True)
        except OSError as err:
            raise WorkspaceError(f"cannot create the workspace folder {self.path}: {err.strerror}") from None
        settings: dict[str, Any] = {}
        if os.path.isfile(marker):
            try:
                with open(marker) as fh:
                    settings = json.load(fh)
            except (OSError, ValueError) as err:
                raise WorkspaceError(f"{marker} is unreadable ({err}); fix or remove it") from None
        if db_url:
            settings["db_url"] = db_url
        if not os.path.isfile(marker) or db_url:
            self._write_settings(settings)
        return settings

    def _write_settings(self, settings: dict[str, Any]) -> None:
        marker = os.path.join(self.path, "workspace.json")
        tmp = f"{marker}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump({**settings, "version": 1}, fh)
        os.replace(tmp, marker)

    # ---- parts ----------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            from torchyard.workspace.store import Store  # noqa: PLC0415 - SQLAlchemy is not cheap

            self._store = Store(self.db_url, lock_dir=self.path)
        return self._store

    @property
    def runs_dir(self) -> str:
        return os.path.join(self.path, "runs")

    def run_dir(self, run_id: str) -> str:
        return os.path.join(self.path, "runs", run_id)

    def artifacts_dir(self, run_id: str) -> str:
        return os.path.join(self.path, "artifacts", run_id)

    @property
    def environments(self) -> EnvironmentRegistry:
        """Named, versioned environments registered in this workspace."""
        from torchyard.environments.registry import EnvironmentRegistry  # noqa: PLC0415

        return EnvironmentRegistry(self.path)

    @property
    def experiments(self) -> dict[str, Experiment]:
        from torchyard.run import Experiment  # noqa: PLC0415

        return {name: Experiment(self, name) for name in self.store.list_experiments()}

    def get_run(self, run_id: str) -> Run:
        from torchyard.run import Experiment, Run  # noqa: PLC0415

        row = self.store.get_run(run_id)
        return Run(Experiment(self, row["experiment"]), run_id)

    def __repr__(self) -> str:
        return f"Workspace(path={self.path!r})"

    # ---- submit ---------------------------------------------------------------------------------

    def submit(
        self,
        experiment: str,
        spec: JobSpec,
        *,
        tags: dict[str, str] | None = None,
        parent_id: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Validate, snapshot, record the run (NotStarted → Queued) and start its supervisor."""
        run_id = self.record_run(experiment, spec, tags=tags, parent_id=parent_id, run_id=run_id)
        from torchyard.supervisor import spawn_supervisor  # noqa: PLC0415

        pid = spawn_supervisor(self.run_dir(run_id))
        self.store.set_supervisor(run_id, pid)
        return run_id

    @property
    def datastores(self) -> DatastoreRegistry:
        """Named datastores registered in this workspace (local folders, S3 buckets, fsspec URLs)."""
        from torchyard.data.datastore import DatastoreRegistry  # noqa: PLC0415

        return DatastoreRegistry(self.path)

    def get_default_datastore(self) -> Datastore:
        """The workspace's own local datastore, ``workspaceblobstore`` (a folder in the workspace)."""
        from torchyard.data.datastore import default_datastore  # noqa: PLC0415

        return default_datastore(self.path)

    def set_artifact_store(self, datastore: Datastore | str | None) -> None:
        """Keep run artifacts in ``datastore`` (e.g. an S3 bucket) instead of this folder; None: local."""
        name = getattr(datastore, "name", datastore)
        if name is not None:
            self.datastores.get(str(name))  # must be registered
        settings = self._open_settings(None)
        if name is None:
            settings.pop("artifact_store", None)
        else:
            settings["artifact_store"] = str(name)
        self._write_settings(settings)

    def artifact_store(self) -> Datastore | None:
        """The datastore that holds run artifacts, or None for this workspace folder."""
        name = self._open_settings(None).get("artifact_store")
        return self.datastores.get(name) if name else None

    @property
    def compute_targets(self) -> ComputeRegistry:
        """The compute targets attached to this workspace (``ComputeTarget.attach``)."""
        from torchyard.compute.registry import ComputeRegistry  # noqa: PLC0415

        return ComputeRegistry(self.path)

    @property
    def snapshots(self) -> SnapshotStore:
        from torchyard.workspace.snapshots import SnapshotStore  # noqa: PLC0415

        return SnapshotStore(os.path.join(self.path, "snapshots"))

    def snapshot_limits(self) -> tuple[int, int]:
        """(max bytes, max files) of a snapshot: TORCHYARD_SNAPSHOT_MAX_BYTES / _MAX_FILES, else the
        workspace.json settings ``snapshot_max_bytes`` / ``snapshot_max_files``, else 300 MB / 2,000."""
        settings: dict[str, Any] = {}
        try:
            with open(os.path.join(self.path, "workspace.json")) as fh:
                settings = json.load(fh)
        except (OSError, ValueError):
            pass
        limits = []
        for name, default in (("max_bytes", 300 * 1024 * 1024), ("max_files", 2000)):
            raw = os.environ.get(f"TORCHYARD_SNAPSHOT_{name.upper()}") or settings.get(f"snapshot_{name}") or default
            try:
                limits.append(int(raw))
            except (TypeError, ValueError):
                raise SpecError(f"snapshot_{name}", f"must be an integer, got {raw!r}") from None
        return limits[0], limits[1]

    def _snapshot(self, source: str, workdir: str) -> dict[str, str]:
        """Store ``source`` content-addressed and materialize it as the run's working folder; returns
        the run properties that record it (snapshot id, and git commit/dirty/branch if any)."""
        from torchyard.workspace.snapshots import git_info  # noqa: PLC0415

        max_bytes, max_files = self.snapshot_limits()
        store = self.snapshots
        snap = store.take(source, max_bytes=max_bytes, max_files=max_files)
        os.makedirs(workdir, exist_ok=True)
        store.materialize(snap.manifest_id, workdir)
        return {"torchyard.snapshot": snap.manifest_id, "torchyard.source_directory": source, **git_info(source)}

    def record_run(
        self,
        experiment: str,
        spec: JobSpec,
        *,
        tags: dict[str, str] | None = None,
        parent_id: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Validate, snapshot and record a run (NotStarted → Queued); starts nothing. ``run_id``: an
        explicit id (a sweep's children are ``<parent>_<i>``); by default a fresh one."""
        from torchyard.compute.registry import get_target  # noqa: PLC0415

        check_name(experiment)
        tags = _str_dict(tags, "tags")
        spec = _registered(self, spec)
        target = get_target(spec.compute_target, self.path)
        target.check(spec)
        _check_supported(spec)
        if run_id is None:
            run_id = f"{experiment}_{int(time.time())}_{secrets.token_hex(4)}"
        else:
            check_name(run_id, "run_id")
        workdir = self.run_dir(run_id)
        properties = self._snapshot(spec.source_directory, workdir)
        os.makedirs(os.path.join(workdir, ".torchyard-run", "journal"), exist_ok=True)
        info = {
            "run_id": run_id,
            "experiment": experiment,
            "workspace": self.path,
            "db_url": self.db_url,
            "python": sys.executable,
            "spec": spec.to_dict(),
        }
        with open(os.path.join(workdir, ".torchyard-run", "run.json"), "w") as fh:
            json.dump(info, fh)
        store = self.store
        store.create_run(
            run_id=run_id,
            experiment=experiment,
            spec_json=spec.to_json().decode(),
            compute_target=spec.compute_target,
            run_dir=workdir,
            tags=tags,
            display_name=spec.display_name,
            parent_id=parent_id,
            properties=properties,
            queued=True,
        )
        return run_id


def _registered(ws: Workspace, spec: JobSpec) -> JobSpec:
    env = spec.environment
    if not env.name or not env.is_default or env.user_managed or env.name == "default" and env.version is None:
        return spec
    if env.version is None and env.name not in ws.environments:
        return spec  # a name alone is only a label
    import msgspec  # noqa: PLC0415

    found = ws.environments.get(env.name, env.version)
    return msgspec.structs.replace(spec, environment=msgspec.convert(found.to_spec_dict(), type(env)))


def _str_dict(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(field, f"must be a dict of strings, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def _check_supported(spec: JobSpec) -> None:
    from torchyard.environments import check_supported  # noqa: PLC0415
    from torchyard.errors import NotSupportedError  # noqa: PLC0415

    check_supported(spec.environment)
    for kind, entries in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        for name, ref in entries.items():
            if not isinstance(ref, dict) or not (ref.get("datastore") or ref.get("url")):
                raise NotSupportedError(f"{kind}.{name}", "needs a datastore path or a URL")
