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


class RemoteDatastore:
    """What a client knows of a server's datastore: its name and kind (the rest stays there)."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.url = ""
        self.options: dict[str, Any] = {}

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
        return RemoteDatastore(found["name"], found["kind"])

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
        return [RemoteDatastore(d["name"], d["kind"]) for d in self.ws.datastore_names()]

    def get(self, name: str) -> RemoteDatastore:
        for ds in self.list():
            if ds.name == name:
                return ds
        raise NotFoundError(f"no datastore {name!r} on the server")


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
