"""``Endpoint``: Azure ML v2's online endpoint — one address, several deployments, traffic split.

Each deployment is a local service (:class:`~torchyard.models.webservice.Webservice` named
``ENDPOINT.DEPLOYMENT``, on 127.0.0.1); the endpoint is a detached router process
(:mod:`torchyard.runtime.serving.router`) in front of them. Everything lives in
``<workspace>/endpoints/NAME/`` (``endpoint.json``, ``state.json``, ``keys.json``, ``logs/``).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import secrets
import shutil
import signal
import time
import urllib.error
import urllib.request
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torchyard.errors import NotFoundError, SpecError

if TYPE_CHECKING:
    from torchyard.models.webservice import (
        InferenceConfig,
        LocalWebserviceDeploymentConfiguration,
        Webservice,
    )
    from torchyard.workspace.workspace import WorkspaceFolder as Workspace


def _svc() -> Any:
    from torchyard.workspace import services  # noqa: PLC0415

    return services


def parse_traffic(text: str | None, field: str = "traffic") -> dict[str, int]:
    """``"blue=90,green=10"`` → ``{"blue": 90, "green": 10}`` (SpecError naming ``field`` otherwise)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = int(value)
        except ValueError:
            raise SpecError(field, f"expected NAME=PERCENT[,NAME=PERCENT...], got {text!r}") from None
    return out


def _alive(pid: Any, marker: bytes) -> bool:
    from torchyard.models.webservice import process_alive  # noqa: PLC0415

    return process_alive(pid, marker)


class Endpoint:
    """An online endpoint: ``Endpoint.create(ws, "digits")``, then ``deploy`` and ``set_traffic``.
    On a team server's workspace it is a :class:`torchyard.remote.models.RemoteEndpoint` (the same
    methods; the router and the deployments run on the server)."""

    def __new__(cls, workspace: Workspace, name: str) -> Any:
        if getattr(workspace, "is_remote", False):
            return workspace.endpoint(name)  # type: ignore[attr-defined]
        return super().__new__(cls)

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._dir = _svc().endpoint_dir(workspace.path, name)
        if _svc().read_json(os.path.join(self._dir, "endpoint.json")) is None:
            known = _svc().list_endpoints(workspace.path)
            raise NotFoundError(f"no endpoint {name!r} in this workspace"
                                + (f"; endpoints: {', '.join(known)}" if known else ""))

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, traffic={self.traffic!r})"

    # ---- create, list -----------------------------------------------------------------------------

    @staticmethod
    def create(workspace: Workspace, name: str, auth_mode: str | None = None, port: int | None = None,
               host: str = "127.0.0.1", description: str | None = None, wait_timeout: float = 30,
               max_request_bytes: int = 16 * 1024 * 1024) -> Endpoint:
        """Start the endpoint's router (``auth_mode="key"`` issues keys, checked as Bearer). A request
        body larger than ``max_request_bytes`` is answered 413 by the router. The router is supervised:
        if it dies it is restarted (``state`` is ``Unhealthy`` meanwhile; ``show()["restarts"]``)."""
        if getattr(workspace, "is_remote", False):
            return workspace.create_endpoint(name, auth_mode=auth_mode, port=port,  # type: ignore[attr-defined]
                                             host=host, description=description, wait_timeout=wait_timeout,
                                             max_request_bytes=max_request_bytes)
        from torchyard.models.webservice import _check_port, _is_loopback  # noqa: PLC0415
        from torchyard.runtime.spawn import spawn_detached  # noqa: PLC0415
        from torchyard.workspace.workspace import check_name  # noqa: PLC0415

        check_name(name, "name")
        if "." in name:
            raise SpecError("name", f"an endpoint name has no '.', got {name!r}")
        if auth_mode not in (None, "key"):
            raise SpecError("auth_mode", f"must be 'key' or None, got {auth_mode!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise SpecError("port", f"must be 1-65535 or None, got {port!r}")
        if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int) or max_request_bytes < 1:
            raise SpecError("max_request_bytes", f"must be an integer of at least 1, got {max_request_bytes!r}")
        if not _is_loopback(host) and auth_mode != "key":
            raise SpecError("host", f"{host} is not a loopback address: an endpoint there needs auth_mode='key'")
        edir = _svc().endpoint_dir(workspace.path, name)
        if os.path.exists(os.path.join(edir, "endpoint.json")):
            raise SpecError("name", f"an endpoint {name!r} exists")
        _check_port(host, port)
        try:
            os.makedirs(os.path.join(edir, "logs"), exist_ok=True)
            if auth_mode == "key":
                _svc().write_json(os.path.join(edir, "keys.json"),
                                  {"primary": secrets.token_urlsafe(32), "secondary": secrets.token_urlsafe(32)},
                                  mode=0o600)
            _svc().write_json(os.path.join(edir, "endpoint.json"), {
                "name": name, "host": host, "port": port, "auth_mode": auth_mode, "description": description,
                "deployments": {}, "traffic": {}, "mirror": {}, "created_at": time.time(),
                "max_request_bytes": max_request_bytes,
            })
            pid = spawn_detached("torchyard.runtime.serving.router", edir, os.path.join(edir, "logs", "router.txt"),
                                 what="the endpoint router")
            _svc().write_json(os.path.join(edir, "state.json"), {"state": "Transitioning", "pid": pid})
            endpoint = Endpoint(workspace, name)
            deadline = time.monotonic() + wait_timeout
            while endpoint.state == "Transitioning" and time.monotonic() < deadline:
                time.sleep(0.02)
            if endpoint.state != "Healthy":
                raise SpecError("port", f"the endpoint router did not start: {endpoint._state().get('error')}")
        except BaseException:
            state = _svc().read_json(os.path.join(edir, "state.json")) or {}
            if _alive(state.get("pid"), b"torchyard.runtime.serving.router"):
                os.kill(int(state["pid"]), signal.SIGTERM)
            shutil.rmtree(edir, ignore_errors=True)
            raise
        return endpoint

    @staticmethod
    def list(workspace: Workspace) -> builtins.list[Endpoint]:
        """Every endpoint of the workspace."""
        if getattr(workspace, "is_remote", False):
            return workspace.endpoints()  # type: ignore[attr-defined]
        return [Endpoint(workspace, n) for n in _svc().list_endpoints(workspace.path)]

    # ---- what it is -------------------------------------------------------------------------------

    def _doc(self) -> dict[str, Any]:
        doc = _svc().read_json(os.path.join(self._dir, "endpoint.json"))
        if doc is None:
            raise NotFoundError(f"the endpoint {self.name!r} was deleted")
        return doc

    def _state(self) -> dict[str, Any]:
        return _svc().read_json(os.path.join(self._dir, "state.json")) or {"state": "Transitioning"}

    @property
    def state(self) -> str:
        """``Transitioning``, ``Healthy``, ``Unhealthy`` (its router is being restarted), ``Failed`` or ``Stopped``."""
        st = self._state()
        state = str(st.get("state", "Transitioning"))
        live = ("Healthy", "Unhealthy", "Transitioning")
        if state in live and not _alive(st.get("pid"), b"torchyard.runtime.serving.router"):
            time.sleep(0.05)  # it may just have written its last state
            st = self._state()
            state = str(st.get("state", "Transitioning"))
            if state in live and not _alive(st.get("pid"), b"torchyard.runtime.serving.router"):
                return "Failed"
        return state

    @property
    def restarts(self) -> int:
        """How many times the router process died and was restarted."""
        return int(self._state().get("restarts") or 0)

    @property
    def scoring_uri(self) -> str | None:
        """The URL requests are sent to (``http://HOST:PORT/score``), or None before the router listens."""
        st = self._state()
        if not st.get("port"):
            return None
        host = st.get("host", "127.0.0.1")
        return f"http://{f'[{host}]' if ':' in host else host}:{st['port']}/score"

    @property
    def traffic(self) -> dict[str, int]:
        """The live traffic split: deployment name → percent (summing to 100)."""
        return dict(self._doc()["traffic"])

    @property
    def mirror_traffic(self) -> dict[str, int]:
        """The mirrored share: deployment name → percent of live requests copied to it."""
        return dict(self._doc()["mirror"])

    @property
    def deployments(self) -> dict[str, Webservice]:
        """The endpoint's deployments: name → its :class:`Webservice`."""
        from torchyard.models.webservice import Webservice  # noqa: PLC0415

        return {k: Webservice(self.workspace, v["service"]) for k, v in self._doc()["deployments"].items()}

    def show(self) -> dict[str, Any]:
        """The endpoint as a dict: address, state, traffic, mirror, deployments and their states."""
        doc = self._doc()
        return {
            "name": self.name, "scoring_uri": self.scoring_uri, "state": self.state,
            "auth_mode": doc.get("auth_mode"), "traffic": doc["traffic"], "mirror": doc["mirror"],
            "restarts": self.restarts, "last_crash": self._state().get("last_crash"),
            "max_request_bytes": doc.get("max_request_bytes"),
            "deployments": {k: {"service": v["service"], "models": v.get("models", []),
                                "state": self.deployments[k].state} for k, v in doc["deployments"].items()},
        }

    def _write(self, doc: dict[str, Any], timeout: float = 10.0) -> None:
        """Store the endpoint's settings and wait until the router has applied them (so the next
        request sees them)."""
        revision = int(doc.get("revision", 0)) + 1
        doc = {**doc, "revision": revision}
        _svc().write_json(os.path.join(self._dir, "endpoint.json"), doc)
        pid = self._state().get("pid")
        if not _alive(pid, b"torchyard.runtime.serving.router"):
            return
        os.kill(int(pid or 0), signal.SIGHUP)  # the supervisor passes it to the serving router
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            applied = _svc().read_json(os.path.join(self._dir, "router.json")) or {}
            if int(applied.get("revision", 0)) >= revision:
                break
            time.sleep(0.005)

    # ---- deployments ------------------------------------------------------------------------------

    def deploy(self, deployment_name: str, models: Any, inference_config: InferenceConfig,
               deployment_config: LocalWebserviceDeploymentConfiguration | None = None,
               deployment_target: str | None = None) -> Webservice:
        """Add (or replace, with no request dropped) the deployment ``deployment_name``; the first
        deployment takes 100 % of the traffic, later ones 0 % until ``set_traffic``."""
        from torchyard.models.webservice import LocalWebservice, Webservice, deploy  # noqa: PLC0415
        from torchyard.workspace.workspace import check_name  # noqa: PLC0415

        check_name(deployment_name, "deployment")
        config = deployment_config or LocalWebservice.deploy_configuration()
        # the router is the door; a deployment on Ray Serve keeps its port (the cluster's one HTTP proxy)
        config = replace(config, host="127.0.0.1", port=config.port if deployment_target not in (None, "local") else None,
                         auth_enabled=False)
        doc = self._doc()
        service_name = f"{self.name}.{deployment_name}"
        if deployment_name in doc["deployments"]:
            svc = Webservice(self.workspace, service_name)
            svc.update(models=models, inference_config=inference_config, deployment_config=replace(
                config, port=svc._doc()["config"].get("port")))
        else:
            svc = deploy(self.workspace, service_name, models, inference_config, config, deployment_target)
            try:
                svc.wait_for_deployment()
            except BaseException:
                svc.delete()
                raise
        base = (svc.scoring_uri or "").rsplit("/", 1)[0]
        doc = self._doc()
        doc["deployments"][deployment_name] = {"service": service_name, "uri": base, "models": svc.models}
        if not doc["traffic"]:
            doc["traffic"] = {deployment_name: 100}
        else:
            doc["traffic"].setdefault(deployment_name, 0)
        self._write(doc)
        return svc

    def set_traffic(self, traffic: dict[str, int], mirror: dict[str, int] | None = None) -> None:
        """Split live traffic by percent (must sum to 100 over known deployments); ``mirror`` copies
        that percent of live requests to a shadow deployment (its answers discarded). Returns once
        the router applies it: the next request is routed by the new split."""
        doc = self._doc()
        known = doc["deployments"]
        names = ", ".join(sorted(known)) or "none yet"

        def check(split: Any, field: str) -> dict[str, int]:
            if not isinstance(split, dict):
                raise SpecError(field, f"must be a dict of deployment → percent, got {type(split).__name__}")
            out = {}
            for k, v in split.items():
                if k not in known:
                    raise SpecError(field, f"unknown deployment {k!r}; deployments: {names}")
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
                    raise SpecError(field, f"{k}: a percent is an integer 0-100, got {v!r}")
                out[str(k)] = v
            return out

        split = check(traffic, "traffic")
        if sum(split.values()) != 100:
            raise SpecError("traffic", f"the weights must sum to 100, got {sum(split.values())} ({split})")
        shadow = check(mirror or {}, "mirror")
        for k, v in shadow.items():
            if v and split.get(k):
                raise SpecError("mirror", f"{k} takes live traffic ({split[k]} %); a mirror target takes none")
            if v > 50:
                raise SpecError("mirror", f"{k}: at most 50 % of the traffic can be mirrored, got {v}")
        doc["traffic"] = {k: split.get(k, 0) for k in known}
        doc["mirror"] = {k: v for k, v in shadow.items() if v}
        self._write(doc)

    def delete_deployment(self, deployment_name: str) -> None:
        """Remove a deployment that takes no traffic (set its share to 0 first)."""
        doc = self._doc()
        if deployment_name not in doc["deployments"]:
            raise SpecError("deployment", f"unknown deployment {deployment_name!r}")
        if doc["traffic"].get(deployment_name):
            raise SpecError("deployment", f"{deployment_name} takes {doc['traffic'][deployment_name]} % of the "
                            "traffic; move it elsewhere first")
        entry = doc["deployments"].pop(deployment_name)
        doc["traffic"].pop(deployment_name, None)
        doc["mirror"].pop(deployment_name, None)
        self._write(doc)
        from torchyard.models.webservice import Webservice  # noqa: PLC0415

        with contextlib.suppress(NotFoundError):
            Webservice(self.workspace, entry["service"]).delete()

    # ---- calling it -------------------------------------------------------------------------------

    def get_keys(self) -> tuple[str, str]:
        """The (primary, secondary) keys of an endpoint created with ``auth_mode='key'``."""
        doc = _svc().read_json(os.path.join(self._dir, "keys.json"))
        if doc is None:
            raise SpecError("auth_mode", f"endpoint {self.name!r} was created without auth_mode='key'")
        return str(doc["primary"]), str(doc["secondary"])

    def regen_key(self, key: str) -> None:
        """Replace the ``primary`` or ``secondary`` key at once."""
        if key not in ("primary", "secondary"):
            raise SpecError("key", f"must be 'primary' or 'secondary', got {key!r}")
        primary, secondary = self.get_keys()
        doc = {"primary": primary, "secondary": secondary, key: secrets.token_urlsafe(32)}
        _svc().write_json(os.path.join(self._dir, "keys.json"), doc, mode=0o600)
        self._write(self._doc())

    def invoke(self, data: Any, deployment: str | None = None, timeout: float = 60.0) -> Any:
        """POST ``data`` to the endpoint (``deployment`` pins one); returns the parsed answer."""
        from torchyard.models.webservice import WebserviceError  # noqa: PLC0415

        uri = self.scoring_uri
        if uri is None:
            raise WebserviceError(f"endpoint {self.name!r} has no address (state {self.state})", status_code=None,
                                  body=None)
        if deployment is not None and deployment not in self._doc()["deployments"]:
            raise SpecError("deployment", f"unknown deployment {deployment!r}")
        body = data.encode() if isinstance(data, str) else json.dumps(data).encode()
        headers = {"Content-Type": "application/json"}
        if deployment:
            headers["torchyard-deployment"] = deployment
        if self._doc().get("auth_mode") == "key":
            headers["Authorization"] = f"Bearer {self.get_keys()[0]}"
        request = urllib.request.Request(uri, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - our own router
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace")
            raise WebserviceError(f"endpoint {self.name!r} answered {err.code}: {text}", status_code=err.code,
                                  body=text) from None

    def get_logs(self, deployment: str | None = None) -> str:
        """The router's log, or one deployment's service logs."""
        if deployment is not None:
            if deployment not in self._doc()["deployments"]:
                raise SpecError("deployment", f"unknown deployment {deployment!r}")
            return self.deployments[deployment].get_logs()
        try:
            with open(os.path.join(self._dir, "logs", "router.txt"), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def delete(self) -> None:
        """Stop the router and delete every deployment. Idempotent."""
        from torchyard.models.webservice import Webservice  # noqa: PLC0415

        doc = _svc().read_json(os.path.join(self._dir, "endpoint.json")) or {"deployments": {}}
        pid = self._state().get("pid")
        if _alive(pid, b"torchyard.runtime.serving.router"):
            os.kill(int(pid or 0), signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid, b"torchyard.runtime.serving.router") and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid, b"torchyard.runtime.serving.router"):
                os.kill(int(pid or 0), signal.SIGKILL)
        for entry in doc["deployments"].values():
            with contextlib.suppress(NotFoundError):
                Webservice(self.workspace, entry["service"]).delete()
        shutil.rmtree(self._dir, ignore_errors=True)
