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
from typing import TYPE_CHECKING, Any

from torchyard.errors import SpecError, WorkspaceError

if TYPE_CHECKING:
    from torchyard.data.datastore import Datastore, DatastoreRegistry
    from torchyard.environments.registry import EnvironmentRegistry
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


class WorkspaceFolder:
    """Where runs, metrics and artifacts live: the folder, its settings, its store and registries
    (L2, persistence only; the SDK's :class:`torchyard.Workspace` adds runs and experiments).

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
        self.db_url: str = settings.get("db_url") or self.embedded_url
        self._store: Store | None = None

    @property
    def embedded_url(self) -> str:
        """The URL of the embedded SQLite store: always this folder's ``store.db``, wherever the
        folder is now (never written to ``workspace.json``, so a moved or copied workspace keeps
        its own store)."""
        return f"sqlite:///{os.path.join(self.path, 'store.db')}"

    def _embedded(self, url: str | None) -> bool:
        """Whether ``url`` names an embedded store: this folder's, or any workspace folder's
        ``store.db`` (what older versions wrote into workspace.json, an absolute path that a moved
        workspace no longer has)."""
        if not url or not url.startswith("sqlite:///"):
            return False
        path = url[len("sqlite:///"):]
        return url == self.embedded_url or (
            os.path.basename(path) == "store.db" and os.path.basename(os.path.dirname(path)) == WORKSPACE_DIRNAME)

    def _open_settings(self, db_url: str | None) -> dict[str, Any]:
        marker = os.path.join(self.path, "workspace.json")
        exists = os.path.isfile(marker)
        if not exists:
            try:
                os.makedirs(os.path.join(self.path, "runs"), exist_ok=True)
                os.makedirs(os.path.join(self.path, "artifacts"), exist_ok=True)
            except OSError as err:
                raise WorkspaceError(f"cannot create the workspace folder {self.path}: {err.strerror}") from None
        settings: dict[str, Any] = {}
        if exists:
            try:
                with open(marker) as fh:
                    settings = json.load(fh)
                if not isinstance(settings, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as err:
                raise WorkspaceError(f"{marker} is unreadable ({err}); fix or remove it") from None
        if self._embedded(settings.get("db_url")):
            settings.pop("db_url")  # an older version's absolute path to the embedded store
        if db_url and not self._embedded(db_url) and settings.get("db_url") != db_url:
            settings["db_url"] = db_url
            self._write_settings(settings)
        elif not exists:
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r})"

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
