"""Versioned data assets: a registered dataset version records what it points at **and** what it held.

``<workspace>/datasets/<name>/<version>.json`` describes a version: its source (a local folder, a
file, or a path in a registered datastore), a manifest and a content digest. A version's files are
pinned in the workspace's content-addressed snapshot store when it is registered (local data), or when
it is first used (data in an object store: downloaded once, checked against the digest taken at
registration); a run then reads ``<workspace>/datasets/<name>/<version>/files``, so a version always
shows the contents it was registered with, never newer ones. Runs record the versions they read
(properties ``torchyard.dataset.<input>`` = ``name:version``); :meth:`DatasetRegistry.runs_of` lists
them back.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from typing import Any

from torchyard.errors import DataError, NotFoundError, SpecError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: a version's pinned files: no limit of a code snapshot's size applies
_LIMITS = {"max_bytes": 1 << 50, "max_files": 10_000_000}
LINEAGE_PREFIX = "torchyard.dataset."


class DatasetRegistry:
    """The registered dataset versions of a workspace folder."""

    def __init__(self, workspace: Any) -> None:
        self.workspace = os.fspath(getattr(workspace, "path", workspace))
        self.root = os.path.join(self.workspace, "datasets")

    # ---- versions ---------------------------------------------------------------------------------

    def _versions(self, name: str) -> builtins.list[int]:
        try:
            names = os.listdir(os.path.join(self.root, name))
        except OSError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def names(self) -> builtins.list[str]:
        """The registered datasets' names."""
        try:
            return sorted(n for n in os.listdir(self.root) if self._versions(n))
        except OSError:
            return []

    def get(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """Version ``version`` (default or ``"latest"``: the newest) of dataset ``name``."""
        versions = self._versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no dataset {name!r} is registered in this workspace (registered: {known})")
        if version in (None, "latest"):
            number = versions[-1]
        else:
            try:
                number = int(version)
            except (TypeError, ValueError):
                raise SpecError("version", f"must be a number or 'latest', got {version!r}") from None
            if number not in versions:
                raise NotFoundError(f"dataset {name!r} has no version {number}; versions: "
                                    f"{', '.join(map(str, versions))}")
        with open(os.path.join(self.root, name, f"{number}.json")) as fh:
            record: dict[str, Any] = json.load(fh)
        return record

    def register(self, workspace: Any, source: dict[str, Any], name: str, *, description: str | None = None,
                 tags: dict[str, str] | None = None, create_new_version: bool = False) -> dict[str, Any]:
        """Register ``source`` (``{"path": local path}`` or ``{"datastore": NAME, "path": p}``) as the
        next version of ``name``; the version's record. Registering the same contents again without
        ``create_new_version`` returns the latest version; other contents then need it."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise SpecError("name", f"invalid dataset name {name!r}: letters, digits, '_', '-', '.'")
        folder = os.path.join(self.root, name)
        os.makedirs(folder, exist_ok=True)
        pinned = _pin_local(workspace, source) if _local_folder(workspace, source) is not None else None
        listing = None if pinned else _listing(workspace, source)
        digest = pinned["digest"] if pinned else listing["digest"]  # type: ignore[index]
        with open(os.path.join(folder, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            versions = self._versions(name)
            if versions and not create_new_version:
                latest = self.get(name)
                if latest["digest"] == digest:
                    return latest
                raise SpecError("create_new_version", f"dataset {name!r} exists (version {versions[-1]}) with other "
                                "contents: pass create_new_version=True to register them as a new version")
            number = (versions[-1] + 1) if versions else 1
            record = {"name": name, "version": number, "source": source, "digest": digest,
                      "description": description, "tags": dict(tags or {}), "created_at": time.time(),
                      **(pinned or listing or {})}
            tmp = os.path.join(folder, f".{number}.json.{os.getpid()}")
            with open(tmp, "w") as fh:
                json.dump(record, fh, indent=1)
            os.replace(tmp, os.path.join(folder, f"{number}.json"))
        return record

    # ---- using a version ------------------------------------------------------------------------------

    def files_of(self, workspace: Any, record: dict[str, Any]) -> str:
        """The folder holding version ``record``'s files as registered (made on first use)."""
        dest = os.path.join(self.root, record["name"], str(record["version"]), "files")
        if os.path.isdir(dest):
            return dest
        tmp = f"{dest}.tmp.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        if record.get("manifest_id"):
            workspace.snapshots.materialize(record["manifest_id"], tmp)
        else:  # in a datastore: download once, and only what the digest says was registered
            from torchyard.data.datastore import Datastore  # noqa: PLC0415

            now = _listing(workspace, record["source"])
            if now["digest"] != record["digest"]:
                raise DataError(f"dataset {record['name']!r} version {record['version']}: the files at "
                                f"{_where(record['source'])} changed since it was registered (digest "
                                f"{record['digest'][:12]}, now {now['digest'][:12]}); register them as a new version")
            store = Datastore.get(workspace, record["source"]["datastore"])
            where = record["source"].get("path") or ""
            fetched = f"{tmp}.fetch"
            shutil.rmtree(fetched, ignore_errors=True)
            store.download(fetched, where or None)  # the files keep their paths from the datastore's root
            os.replace(os.path.join(fetched, where) if where else fetched, tmp)
            shutil.rmtree(fetched, ignore_errors=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def version_of_path(self, path: str) -> tuple[str, int] | None:
        """(name, version) when ``path`` is (inside) a version's files folder."""
        rel = os.path.relpath(os.path.abspath(path), self.root)
        parts = rel.split(os.sep)
        if len(parts) >= 3 and parts[0] not in ("..", ".") and parts[1].isdigit() and parts[2] == "files":
            return parts[0], int(parts[1])
        return None

    def runs_of(self, store: Any, name: str, version: int | None = None) -> builtins.list[str]:
        """The ids of the runs that read ``name`` (version ``version``, or any), newest first."""
        from sqlalchemy import select  # noqa: PLC0415

        from torchyard.workspace.schema import run_properties, runs  # noqa: PLC0415

        want = f"{name}:{version}" if version is not None else None
        query = (select(run_properties.c.run_id, run_properties.c.value)
                 .join(runs, runs.c.id == run_properties.c.run_id)
                 .where(run_properties.c.key.like(LINEAGE_PREFIX + "%"))
                 .order_by(runs.c.created_at.desc()))
        out: builtins.list[str] = []
        with store.read_engine.connect() as conn:
            for run_id, value in conn.execute(query):
                if (value == want if want else value.split(":")[0] == name) and run_id not in out:
                    out.append(run_id)
        return out


def _where(source: dict[str, Any]) -> str:
    return f"{source['datastore']}:{source.get('path') or '/'}" if source.get("datastore") else str(source.get("path"))


def _local_folder(workspace: Any, source: dict[str, Any]) -> str | None:
    """The local file or folder ``source`` names, or None for data in an object store."""
    if not source.get("datastore"):
        return os.path.abspath(os.fspath(source["path"]))
    from torchyard.data.datastore import Datastore  # noqa: PLC0415

    store = Datastore.get(workspace, source["datastore"])
    return store.url_of(source.get("path") or "") if store.kind == "local" else None


def _pin_local(workspace: Any, source: dict[str, Any]) -> dict[str, Any]:
    """Copy a local file or folder into the workspace's content-addressed store: what a version holds."""
    path = _local_folder(workspace, source)
    assert path is not None
    if not os.path.exists(path):
        raise NotFoundError(f"cannot register a dataset from {_where(source)}: {path} does not exist")
    folder, made = path, None
    if os.path.isfile(path):  # one file: a folder holding it
        made = folder = tempfile.mkdtemp(prefix="torchyard-dataset-")
        shutil.copy2(path, os.path.join(folder, os.path.basename(path)))
    try:
        snap = workspace.snapshots.take(folder, **_LIMITS)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    return {"manifest_id": snap.manifest_id, "digest": snap.manifest_id, "files": snap.file_count,
            "size": snap.total_bytes}


def _listing(workspace: Any, source: dict[str, Any]) -> dict[str, Any]:
    """The manifest of data in an object store: every file's path, size and ETag (or time), digested."""
    from torchyard.data.datastore import Datastore  # noqa: PLC0415

    store = Datastore.get(workspace, source["datastore"])
    fs = store.filesystem()
    root, files = store._find(fs, source.get("path") or "")
    if not files:
        raise DataError(f"cannot register a dataset from {_where(source)}: no files there")
    rows = sorted((os.path.relpath(p, root) if p != root else os.path.basename(p), int(info.get("size") or 0),
                   str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""))
                  for p, info in files.items())
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return {"digest": digest, "files": len(rows), "size": sum(r[1] for r in rows)}
