"""The model registry and model services of a team server, for ``Model`` and ``Webservice``.

:class:`RemoteRegistry` answers the calls ``torchyard.models.model.Model`` makes of a
``ModelRegistry`` over HTTP, so ``Model.register(remote_ws, ...)``, ``Model.list``, ``Model(ws,
name, version=, alias=)``, ``download``, tags, aliases and delete work unchanged against a server:
files are uploaded content-addressed like a run's code (only what the server lacks travels) and
downloaded file by file, each checked against its SHA-256. :class:`RemoteWebservice` is a service
that runs ON THE SERVER: state, details, logs, keys, scoring and delete go through the server, and
its scoring URL names the server's host.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from torchyard.errors import NotFoundError, NotSupportedError, SpecError, WorkspaceError
from torchyard.remote.client import q


def record_of(doc: Mapping[str, Any]) -> Any:
    """A ``ModelRecord`` from the server's JSON of a version."""
    from torchyard.workspace.models import ModelRecord  # noqa: PLC0415

    names = {f.name for f in dataclasses.fields(ModelRecord)}
    return ModelRecord(**{k: v for k, v in doc.items() if k in names})


def _tag_params(tags: Any) -> list[str]:
    """``Model.list``'s tags (keys, [key, value] pairs, or a dict) as the route's ``tag`` values."""
    if tags is None:
        return []
    if isinstance(tags, Mapping):
        return [f"{k}={v}" if v is not None else str(k) for k, v in tags.items()]
    out = []
    for item in tags:
        if isinstance(item, list | tuple):
            out.append(f"{item[0]}={item[1]}")
        else:
            out.append(str(item))
    return out


class RemoteRegistry:
    """``ModelRegistry``'s methods over a :class:`~torchyard.remote.workspace.RemoteWorkspace`."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @property
    def client(self) -> Any:
        return self.ws.client

    @staticmethod
    def _base(name: str, version: int | None = None) -> str:
        path = f"/api/v1/models/{q(name)}"
        return path if version is None else f"{path}/versions/{int(version)}"

    # ---- register -------------------------------------------------------------------------------

    def register(self, name: str, path: str | os.PathLike[str], *, tags: dict[str, str] | None = None,
                 properties: dict[str, str] | None = None, description: str | None = None,
                 framework: str | None = None, run_id: str | None = None, experiment: str | None = None,
                 file_name: str | None = None) -> Any:
        """Upload the file or folder at ``path`` (what the server lacks) and register it on the server."""
        from torchyard.workspace.models import check_model_name  # noqa: PLC0415

        check_model_name(name)
        if run_id is not None or experiment is not None:
            raise NotSupportedError("run_id", "register a run's model with run.register_model (on the server)")
        src = os.path.abspath(os.fspath(path))
        if not os.path.exists(src):
            raise SpecError("model_path", f"{os.fspath(path)!r} does not exist")
        snap, snapshot, sent = self.ws.upload_path(src)
        if snap.file_count == 0:
            raise SpecError("model_path", f"the folder {os.fspath(path)!r} holds no files")
        self.ws.last_upload_bytes = sent
        body = {"name": name, "snapshot": snapshot, "kind": "file" if os.path.isfile(src) else "folder",
                "file_name": file_name or os.path.basename(src.rstrip("/")), "tags": dict(tags or {}),
                "properties": dict(properties or {}), "description": description, "framework": framework}
        return record_of(self.client.post("/api/v1/models", body)["model"])

    # ---- read -----------------------------------------------------------------------------------

    def get(self, name: str, version: int | None = None, alias: str | None = None) -> Any:
        """A version: the newest, ``version``, or the one ``alias`` points at (NotFoundError else)."""
        if version is not None:
            return record_of(self.client.get(self._base(name, version))["model"])
        found = self.client.get(self._base(name))
        if alias is None:
            return record_of(found["versions"][0])
        if alias not in found["aliases"]:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")
        number = found["aliases"][alias]
        return next(record_of(v) for v in found["versions"] if v["version"] == number)

    def list(self, name: str | None = None, tags: Any = None, latest: bool = False) -> builtins.list[Any]:
        """Versions the caller may see, by name then newest first."""
        params: dict[str, Any] = {"name": name, "tag": _tag_params(tags) or None, "latest": "1" if latest else None}
        return [record_of(doc) for doc in self.client.get("/api/v1/models", **params)["models"]]

    def names(self) -> builtins.list[str]:
        return sorted({r.name for r in self.list()})

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[dict[str, Any]]:
        events = self.client.get(self._base(name))["alias_history"]
        return [e for e in events if alias is None or e["alias"] == alias]

    # ---- change ---------------------------------------------------------------------------------

    def set_tags(self, name: str, version: int, tags: dict[str, str], remove: builtins.list[str] | None = None) -> None:
        self.client.post(self._base(name, version) + "/tags", {"set": tags, "remove": list(remove or [])})

    def add_properties(self, name: str, version: int, props: dict[str, str]) -> None:
        self.client.post(self._base(name, version) + "/properties", {"properties": props})

    def set_alias(self, name: str, version: int, alias: str) -> None:
        self.client.request("PUT", f"{self._base(name)}/aliases/{q(alias)}", {"version": int(version)})

    def remove_alias(self, name: str, alias: str) -> None:
        self.client.request("DELETE", f"{self._base(name)}/aliases/{q(alias)}")

    def delete(self, name: str, version: int) -> None:
        """Delete on the server (refused there while one of its services uses the version)."""
        self.client.request("DELETE", self._base(name, version))

    # ---- files ----------------------------------------------------------------------------------

    def materialize(self, record: Any, dest: str, *, link: bool = False) -> str:
        """Download the version's files under ``dest`` (each checked against its SHA-256); the
        model's path there (the file of a single-file model, else ``dest``)."""
        listing = self.client.get(self._base(record.name, record.version) + "/files")
        os.makedirs(dest, exist_ok=True)
        root = os.path.realpath(dest)
        for f in listing["files"]:
            target = os.path.realpath(os.path.join(dest, f["path"]))
            if not target.startswith(root + os.sep):
                raise WorkspaceError(f"the server listed a file outside the model: {f['path']!r}")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            url = self._base(record.name, record.version) + "/files/" + "/".join(q(p) for p in f["path"].split("/"))
            self.client.download(url, target)
            digest = hashlib.sha256()
            with open(target, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != f["sha256"]:
                os.unlink(target)
                raise WorkspaceError(f"{f['path']} arrived damaged (SHA-256 mismatch); try again")
        if listing["kind"] == "file":
            return os.path.join(dest, listing["files"][0]["path"])
        return dest


# ---- services ----------------------------------------------------------------------------------------


def _deployment_body(ws: Any, models: Any, inference_config: Any, deployment_config: Any,
                     deployment_target: str | None) -> dict[str, Any]:
    """What a deployment sends: the models' ids, the entry script, its uploaded folder, the config."""
    from torchyard.models.webservice import InferenceConfig, LocalWebserviceDeploymentConfiguration  # noqa: PLC0415

    if models is None or isinstance(models, str) or hasattr(models, "version"):
        models = [models] if models is not None else []
    if not isinstance(models, list | tuple) or not models:
        raise SpecError("models", "give at least one Model (or 'NAME:VERSION')")
    ids = [m if isinstance(m, str) else f"{m.name}:{m.version}" for m in models]
    if not isinstance(inference_config, InferenceConfig):
        raise SpecError("inference_config", "give an InferenceConfig(entry_script=..., source_directory=...)")
    if inference_config.environment is not None:
        raise NotSupportedError("inference_config.environment", "a service deployed through a team server runs in "
                                "the server's interpreter; register the environment on the server and deploy there")
    inference_config.check()  # the entry script exists and defines init/run (here, before anything travels)
    if deployment_config is not None and not isinstance(deployment_config, LocalWebserviceDeploymentConfiguration):
        raise SpecError("deployment_config", "expected LocalWebservice.deploy_configuration(...)")
    config = dataclasses.asdict(deployment_config) if deployment_config is not None else {}
    snapshot, sent = ws.upload_snapshot(os.path.abspath(os.fspath(inference_config.source_directory)))
    ws.last_upload_bytes = sent
    return {"models": ids, "entry_script": inference_config.entry_script, "snapshot": snapshot,
            "environment_variables": dict(inference_config.environment_variables), "deployment_config": config,
            "deployment_target": deployment_target}


def deploy(ws: Any, name: str, models: Any, inference_config: Any, deployment_config: Any,
           deployment_target: str | None = None, overwrite: bool = False) -> RemoteWebservice:
    """``Model.deploy`` against a server: upload the entry script's folder, start the service there."""
    body = {"name": name, **_deployment_body(ws, models, inference_config, deployment_config, deployment_target),
            "overwrite": bool(overwrite)}
    found = ws.client.post("/api/v1/services", body)["service"]
    return RemoteWebservice(ws, found["name"])


def on_server_host(ws: Any, uri: str | None) -> str | None:
    """``uri`` (an address on the server's machine) with the host the client reaches the server by."""
    if not uri:
        return None
    parts = urlsplit(uri)
    host = urlsplit(ws.url).hostname or parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path, parts.query, ""))


class RemoteWebservice:
    """A model service running on a team server (``Webservice``'s methods, answered by the server)."""

    def __init__(self, workspace: Any, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._path = f"/api/v1/services/{q(name)}"
        self._summary()  # NotFoundError when there is none (or the caller may not see it)

    def __repr__(self) -> str:
        return f"Webservice(name={self.name!r}, server={self.workspace.url!r})"

    @staticmethod
    def list(workspace: Any) -> builtins.list[RemoteWebservice]:
        """The server's services the caller may see."""
        return [RemoteWebservice(workspace, s["name"]) for s in workspace.client.get("/api/v1/services")["services"]]

    def _summary(self, lines: int = 1) -> dict[str, Any]:
        found: dict[str, Any] = self.workspace.client.get(self._path, lines=lines)
        return found

    @property
    def state(self) -> str:
        """``Transitioning``, ``Healthy``, ``Unhealthy``, ``Failed`` or ``Stopped`` (judged on the server)."""
        return str(self._summary()["service"]["state"])

    def get_details(self) -> dict[str, Any]:
        """The server's summary of the service (state, models, workers, restarts, configuration)."""
        details = dict(self._summary()["service"])
        details["scoring_uri"] = self._on_server_host(details.get("scoring_uri"))
        details["swagger_uri"] = self._on_server_host(details.get("swagger_uri"))
        return details

    def _on_server_host(self, uri: str | None) -> str | None:
        """The service's address with the host the client reaches the server by (the service runs
        on the server's machine; it listens on the address its deployment configuration names)."""
        return on_server_host(self.workspace, uri)

    @property
    def scoring_uri(self) -> str | None:
        return self.get_details()["scoring_uri"]

    @property
    def swagger_uri(self) -> str | None:
        return self.get_details()["swagger_uri"]

    @property
    def models(self) -> builtins.list[str]:
        return list(self.get_details()["models"])

    @property
    def auth_enabled(self) -> bool:
        return bool(self.get_details()["auth_enabled"])

    def get_logs(self, num_lines: int = 5000) -> str:
        """The service's logs (supervisor's and workers'), as the server has them."""
        return str(self._summary(lines=max(1, min(int(num_lines), 5000)))["logs"])

    def get_keys(self) -> tuple[str, str]:
        keys = self.workspace.client.get(self._path + "/keys")
        return str(keys["primary"]), str(keys["secondary"])

    def regen_key(self, key: str) -> None:
        """Replace the ``"primary"`` or ``"secondary"`` key on the server (the old one stops working
        at once); the service's creator or an admin."""
        if key not in ("primary", "secondary"):
            raise SpecError("key", f"must be 'primary' or 'secondary', got {key!r}")
        self.workspace.client.post(self._path + "/keys", {"key": key})

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float = 600) -> None:
        """Block until the service is Healthy; DeploymentError (with the logs' end) if it Failed."""
        from torchyard.models.webservice import DeploymentError  # noqa: PLC0415

        deadline = time.monotonic() + timeout_sec
        delay = 0.05
        while True:
            state = self.state
            if state == "Healthy":
                if show_output:
                    sys.stdout.write(self.get_logs())
                return
            if state in ("Failed", "Stopped"):
                logs = self.get_logs()
                err = self._summary()["service"].get("error") or "the service stopped"
                raise DeploymentError(f"service {self.name!r} {state.lower()}: {str(err).strip().splitlines()[-1]} "
                                      "(service.get_logs() has the whole story)", logs=logs)
            if time.monotonic() > deadline:
                raise DeploymentError(f"service {self.name!r} is still {state} after {timeout_sec} s",
                                      logs=self.get_logs())
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def run(self, input_data: Any, timeout: float = 60.0) -> Any:
        """POST ``input_data`` to the service's ``/score`` on the server's host; the answer."""
        from torchyard.models.webservice import DeploymentError  # noqa: PLC0415

        details = self.get_details()
        uri = details["scoring_uri"]
        if uri is None:
            raise DeploymentError(f"service {self.name!r} has no address yet (state {details['state']})")
        headers = {"Content-Type": "application/json"}
        if details.get("auth_enabled"):
            headers["Authorization"] = f"Bearer {self.get_keys()[0]}"
        return _post_json(uri, input_data, {k: v for k, v in headers.items() if k != "Content-Type"}, timeout,
                          f"service {self.name!r}")

    def update(self, models: Any = None, inference_config: Any = None, deployment_config: Any = None) -> None:
        """Serve other models and/or other code on the server, with no request dropped (see
        ``Webservice.update``); new code's folder is uploaded (only what the server lacks)."""
        body: dict[str, Any] = {}
        if models is not None:
            items = [models] if isinstance(models, str) or hasattr(models, "version") else list(models)
            body["models"] = [m if isinstance(m, str) else f"{m.name}:{m.version}" for m in items]
        if inference_config is not None or deployment_config is not None:
            sent = _deployment_body(self.workspace, body.get("models") or self.models,
                                    inference_config, deployment_config, None) if inference_config is not None else {}
            if inference_config is not None:
                body.update({k: sent[k] for k in ("entry_script", "snapshot", "environment_variables")})
            if deployment_config is not None:
                body["deployment_config"] = dataclasses.asdict(deployment_config)
        self.workspace.client.post(self._path + "/update", body)

    def delete(self) -> None:
        """Stop the service on the server and remove it. Idempotent."""
        try:
            self.workspace.client.request("DELETE", self._path)
        except NotFoundError:
            pass


# ---- endpoints ----------------------------------------------------------------------------------------


def _post_json(uri: str, data: Any, headers: dict[str, str], timeout: float, what: str) -> Any:
    from torchyard.models.webservice import WebserviceError  # noqa: PLC0415

    body = data.encode() if isinstance(data, str) else json.dumps(data).encode()
    request = urllib.request.Request(uri, data=body, headers={"Content-Type": "application/json", **headers},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - the server's endpoint
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode("utf-8", "replace")
        raise WebserviceError(f"{what} answered {err.code}: {text}", status_code=err.code, body=text) from None
    except urllib.error.URLError as err:
        raise WebserviceError(f"{what} did not answer: {err.reason}", status_code=None, body=None) from None


class RemoteEndpoint:
    """An online endpoint on a team server (``Endpoint``'s methods): its router and deployments run
    on the server; its scoring URL names the server's host."""

    def __init__(self, workspace: Any, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._path = f"/api/v1/endpoints/{q(name)}"
        self._get()  # NotFoundError when there is none

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, server={self.workspace.url!r})"

    @staticmethod
    def create(workspace: Any, name: str, auth_mode: str | None = None, port: int | None = None,
               host: str = "127.0.0.1", description: str | None = None, wait_timeout: float = 30,
               max_request_bytes: int = 16 * 1024 * 1024) -> RemoteEndpoint:
        """Start the endpoint's router on the server (see ``Endpoint.create``)."""
        body = {"name": name, "auth_mode": auth_mode, "port": port, "host": host, "description": description,
                "max_request_bytes": max_request_bytes}
        workspace.client.post("/api/v1/endpoints", body)
        return RemoteEndpoint(workspace, name)

    @staticmethod
    def list(workspace: Any) -> builtins.list[RemoteEndpoint]:
        return [RemoteEndpoint(workspace, e["name"]) for e in workspace.client.get("/api/v1/endpoints")["endpoints"]]

    def _get(self, lines: int = 1) -> dict[str, Any]:
        found: dict[str, Any] = self.workspace.client.get(self._path, lines=lines)
        return found

    def show(self) -> dict[str, Any]:
        """The endpoint as a dict: address (the server's host), state, traffic, mirror, deployments."""
        shown = dict(self._get()["endpoint"])
        shown["scoring_uri"] = on_server_host(self.workspace, shown.get("scoring_uri"))
        return shown

    @property
    def state(self) -> str:
        return str(self.show()["state"])

    @property
    def restarts(self) -> int:
        return int(self.show().get("restarts") or 0)

    @property
    def scoring_uri(self) -> str | None:
        return self.show()["scoring_uri"]

    @property
    def traffic(self) -> dict[str, int]:
        return dict(self.show()["traffic"])

    @property
    def mirror_traffic(self) -> dict[str, int]:
        return dict(self.show()["mirror"])

    @property
    def deployments(self) -> dict[str, RemoteWebservice]:
        return {k: RemoteWebservice(self.workspace, v["service"]) for k, v in self.show()["deployments"].items()}

    def deploy(self, deployment_name: str, models: Any, inference_config: Any, deployment_config: Any = None,
               deployment_target: str | None = None) -> RemoteWebservice:
        """Add or replace a deployment on the server (the entry script's folder is uploaded)."""
        body = {"deployment": deployment_name,
                **_deployment_body(self.workspace, models, inference_config, deployment_config, deployment_target)}
        found = self.workspace.client.post(self._path + "/deployments", body)
        return RemoteWebservice(self.workspace, found["service"])

    def set_traffic(self, traffic: dict[str, int], mirror: dict[str, int] | None = None) -> None:
        """Split live traffic by percent (and mirror); returns once the server's router applies it."""
        self.workspace.client.request("PUT", self._path + "/traffic", {"traffic": traffic, "mirror": mirror or {}})

    def delete_deployment(self, deployment_name: str) -> None:
        self.workspace.client.request("DELETE", f"{self._path}/deployments/{q(deployment_name)}")

    def get_keys(self) -> tuple[str, str]:
        keys = self.workspace.client.get(self._path + "/keys")
        return str(keys["primary"]), str(keys["secondary"])

    def regen_key(self, key: str) -> None:
        """Replace the endpoint's ``"primary"`` or ``"secondary"`` key on the server (the router uses
        the new one before this returns); the endpoint's creator or an admin."""
        if key not in ("primary", "secondary"):
            raise SpecError("key", f"must be 'primary' or 'secondary', got {key!r}")
        self.workspace.client.post(self._path + "/keys", {"key": key})

    def invoke(self, data: Any, deployment: str | None = None, timeout: float = 60.0) -> Any:
        """POST ``data`` to the endpoint on the server's host (``deployment`` pins one)."""
        from torchyard.models.webservice import WebserviceError  # noqa: PLC0415

        shown = self.show()
        if shown["scoring_uri"] is None:
            raise WebserviceError(f"endpoint {self.name!r} has no address (state {shown['state']})",
                                  status_code=None, body=None)
        if deployment is not None and deployment not in shown["deployments"]:
            raise SpecError("deployment", f"unknown deployment {deployment!r}")
        headers = {"torchyard-deployment": deployment} if deployment else {}
        if shown.get("auth_mode") == "key":
            headers["Authorization"] = f"Bearer {self.get_keys()[0]}"
        return _post_json(shown["scoring_uri"], data, headers, timeout, f"endpoint {self.name!r}")

    def get_logs(self, deployment: str | None = None) -> str:
        """The router's log (its last 5000 lines), or one deployment's service logs."""
        if deployment is not None:
            shown = self.show()
            if deployment not in shown["deployments"]:
                raise SpecError("deployment", f"unknown deployment {deployment!r}")
            return RemoteWebservice(self.workspace, shown["deployments"][deployment]["service"]).get_logs()
        return str(self._get(lines=5000)["logs"])

    def delete(self) -> None:
        """Stop the router and delete every deployment, on the server. Idempotent."""
        try:
            self.workspace.client.request("DELETE", self._path)
        except NotFoundError:
            pass
