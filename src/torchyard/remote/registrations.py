"""A team server's environments, datastores and compute targets, as a remote workspace's
``ws.environments``, ``ws.datastores`` and ``ws.compute_targets``: everyone may list them,
registering needs an admin (the server answers 403 otherwise), and what a datastore or a target
is configured with stays on the server (a remote listing has names and kinds only)."""

from __future__ import annotations

import builtins
import os
from typing import Any

from torchyard.errors import NotFoundError, SpecError
from torchyard.remote.client import q


def _read_text(path: str | None, field: str) -> str | None:
    if not path:
        return None
    try:
        with open(path) as fh:
            return fh.read()
    except OSError as err:
        raise SpecError(field, f"cannot read {path}: {err.strerror}") from None


class RemoteEnvironments:
    """``ws.environments`` of a team server: ``register(env)``, ``get(name, version)``, ``list()``."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def register(self, env: Any) -> Any:
        """Register ``env`` on the server (its requirements/conda files travel as their text)."""
        from torchyard.spec.estimators import Environment  # noqa: PLC0415

        doc = env.to_spec_dict()
        body = {k: doc[k] for k in ("name", "version", "pip_packages", "conda_packages", "python", "user_managed")}
        body["pip_requirements"] = _read_text(doc.get("pip_requirements_file"), "pip_requirements_file")
        body["conda_dependencies"] = _read_text(doc.get("conda_dependencies_file"), "conda_dependencies_file")
        found = self.ws.client.post("/api/v1/environments", body)["environment"]
        return Environment(found["name"], found["version"], pip=env.pip, conda=env.conda, python=env.python,
                           user_managed=env.user_managed)

    def get(self, name: str, version: str | None = None) -> Any:
        """A registered environment (the latest version unless ``version``); its files stay on the server."""
        from torchyard.spec.estimators import Environment  # noqa: PLC0415

        doc = self.ws.client.get(f"/api/v1/environments/{q(name)}", version=version)["environment"]
        return Environment(doc["name"], doc["version"], pip=doc.get("pip_packages") or [],
                           conda=doc.get("conda_packages") or [], python=doc.get("python"),
                           user_managed=bool(doc.get("user_managed")))

    def list(self) -> builtins.list[Any]:
        return [self.get(e["name"], e["version"]) for e in self.ws.environment_names()]

    def names(self) -> builtins.list[str]:
        return sorted({e["name"] for e in self.ws.environment_names()})


def _safe_relative(path: str) -> str:
    """A datastore path as the server listed it, checked before it names a local file."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in path \
            or "\\" in path:
        raise SpecError("path", f"the server listed an unsafe path {path!r}")
    return path


class RemoteDatastore:
    """What a client knows of a server's datastore: its name and kind (the rest stays there), and
    its files through the server (``list``, ``upload``, ``upload_files``, ``download``: read and
    written with the server's credentials; members and admins)."""

    def __init__(self, name: str, kind: str, ws: Any = None) -> None:
        self.name = name
        self.kind = kind
        self.url = ""
        self.options: dict[str, Any] = {}
        self.ws = ws
        #: bytes the last upload sent (objects the server already had do not travel again)
        self.last_upload_bytes = 0

    @property
    def _base(self) -> str:
        if self.ws is None:
            raise SpecError("datastore", "this datastore object is not bound to a server workspace")
        return f"/api/v1/datastores/{q(self.name)}"

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Paths (relative to the datastore's root) of the files at or under ``prefix``."""
        return builtins.list(self.ws.client.get(self._base + "/files", prefix=prefix or None)["files"])

    def upload(self, src_dir: str | os.PathLike[str], target_path: str | None = None, overwrite: bool = True) -> int:
        """Copy the files under the local folder ``src_dir`` to ``target_path`` of the server's
        datastore, keeping their relative paths (only objects the server lacks travel); returns how
        many were written (existing ones are skipped without ``overwrite``)."""
        src = os.path.abspath(os.fspath(src_dir))
        if not os.path.isdir(src):
            raise SpecError("src_dir", f"{os.fspath(src_dir)!r} is not a folder")
        return self._send(src, target_path, overwrite)

    def upload_files(self, files: Any, target_path: str | None = None, overwrite: bool = True) -> int:
        """Copy each of the local ``files`` to ``target_path/<its name>``; returns how many were written."""
        import shutil  # noqa: PLC0415
        import tempfile  # noqa: PLC0415

        paths = [os.path.abspath(os.fspath(f)) for f in files]
        for path in paths:
            if not os.path.isfile(path):
                raise SpecError("files", f"{path} is not a file")
        names = [os.path.basename(p) for p in paths]
        if len(set(names)) != len(names):
            raise SpecError("files", "two files have the same name; upload their folder instead")
        with tempfile.TemporaryDirectory(prefix="torchyard-upload-") as tmp:
            for path, name in zip(paths, names, strict=True):
                try:
                    os.link(path, os.path.join(tmp, name))
                except OSError:
                    shutil.copy2(path, os.path.join(tmp, name))
            return self._send(tmp, target_path, overwrite)

    def _send(self, folder: str, target_path: str | None, overwrite: bool) -> int:
        snap, snapshot, sent = self.ws.upload_path(folder)
        self.last_upload_bytes = sent
        if snap.file_count == 0:
            raise SpecError("src_dir", f"{folder} holds no files")
        found = self.ws.client.post(self._base + "/upload", {"snapshot": snapshot, "target": target_path,
                                                             "overwrite": bool(overwrite)})
        return int(found["uploaded"])

    def download(self, target_path: str | os.PathLike[str], prefix: str | None = None, overwrite: bool = True) -> int:
        """Copy the files at or under ``prefix`` into the local folder ``target_path``, keeping their
        paths relative to the datastore's root; returns how many were downloaded."""
        dest = os.path.abspath(os.fspath(target_path))
        paths = [_safe_relative(p) for p in self.list(prefix or "")]
        if not paths:
            raise SpecError("prefix", f"datastore {self.name!r}: nothing to download at {prefix or 'the root'!r}")
        count = 0
        for path in paths:
            local = os.path.join(dest, *path.split("/"))
            if not overwrite and os.path.exists(local):
                continue
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self.ws.client.download(self._base + "/files/" + "/".join(q(p) for p in path.split("/")), local)
            count += 1
        return count

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, kind={self.kind!r}, on the server)"


class RemoteDatastores:
    """``ws.datastores`` of a team server: ``list()``, and registering (admins) with
    ``register_local(name, path_on_the_server)``, ``register_s3(name, bucket, ...)``,
    ``register_fsspec(name, url, **options)`` (as ``Datastore.register_*``)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def _register(self, body: dict[str, Any]) -> RemoteDatastore:
        found = self.ws.client.post("/api/v1/datastores", body)["datastore"]
        return RemoteDatastore(found["name"], found["kind"], self.ws)

    def register_local(self, name: str, path: str) -> RemoteDatastore:
        """A folder ON THE SERVER's machine (``path`` is the server's)."""
        return self._register({"name": name, "kind": "local", "path": os.fspath(path)})

    def register_s3(self, name: str, bucket: str, prefix: str | None = None, endpoint_url: str | None = None,
                    profile: str | None = None, credentials: str = "node") -> RemoteDatastore:
        """An S3 bucket, read with the server's credentials (its AWS variables or ``profile``)."""
        return self._register({"name": name, "kind": "s3", "bucket": bucket, "prefix": prefix,
                               "endpoint_url": endpoint_url, "profile": profile, "credentials": credentials})

    def register_fsspec(self, name: str, url: str, **options: Any) -> RemoteDatastore:
        return self._register({"name": name, "kind": "fsspec", "url": url, "options": options})

    def list(self) -> builtins.list[RemoteDatastore]:
        return [RemoteDatastore(d["name"], d["kind"], self.ws) for d in self.ws.datastore_names()]

    def get(self, name: str) -> RemoteDatastore:
        """The server's datastore ``name`` (its files: ``.list``, ``.upload``, ``.download``)."""
        for ds in self.list():
            if ds.name == name:
                return ds
        raise NotFoundError(f"no datastore {name!r} on the server")

    def __getitem__(self, name: str) -> RemoteDatastore:
        return self.get(name)


class RemoteComputeTargets:
    """``ws.compute_targets`` of a team server: ``list()`` (name and kind), ``attach(target)`` and
    ``remove(name)`` (admins)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def list(self) -> builtins.list[dict[str, Any]]:
        return [{"name": r["name"], "kind": r["kind"], "config": {}} for r in self.ws.compute_names()]

    def record(self, name: str) -> dict[str, Any]:
        for r in self.list():
            if r["name"] == name:
                return r
        raise NotFoundError(f"no compute target {name!r} on the server")

    def attach(self, name: str, target: Any) -> dict[str, Any]:
        """Attach ``target`` (e.g. ``RayCompute(address=...)``) under ``name`` on the server; the
        settings are the server's from then on (addresses, paths: as the server's machine sees them)."""
        found: dict[str, Any] = self.ws.client.post("/api/v1/compute", {"kind": target.kind, "name": name,
                                                                        "config": target.to_config()})["compute"]
        return found

    def remove(self, name: str) -> None:
        self.ws.client.request("DELETE", f"/api/v1/compute/{q(name)}")
