"""The dashboard's models and services: read-only routes under ``/api/v1`` and their pages.

``/api/v1/models`` (versions, filter by name and tag), ``/api/v1/models/{name}`` (a name's versions,
aliases and alias history), ``/api/v1/models/{name}/versions/{version}`` (one version, with the
services that serve it), ``/api/v1/services`` and ``/api/v1/services/{name}`` (state, address,
models, workers, restarts, the logs' tail), ``/api/v1/endpoints`` and ``/api/v1/endpoints/{name}``
(state, address, traffic split, mirror, deployments, the router log's tail). Keys are never shown.
Reads go through the registry and the SDK's ``Webservice``/``Endpoint``, as scripts do.

The pages (``/models``, ``/models/{name}``, ``/models/{name}/versions/{version}``, ``/services``,
``/services/{name}``, ``/endpoints/{name}``) are one HTML shell, ``models.html``, whose script
(``models.js``) reads these routes and renders every user-written string as text.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from torchyard.errors import NotFoundError, SpecError
from torchyard.server.routing import READ, _ctx, _int, _json, _visible, endpoint

TAIL_LINES = 200
STATIC = os.path.join(os.path.dirname(__file__), "static")


def _hidden(request: Request) -> Callable[[str | None], bool]:
    """Whether a model from experiment ``name`` is hidden from the caller: on the team server a
    user without a grant on an experiment sees nothing of it, its models included (a model with no
    run behind it belongs to no experiment and is shown to every reader)."""
    visible = _visible(_ctx(request))
    if visible is None:
        return lambda name: False
    allowed = set(visible)
    return lambda name: name is not None and name not in allowed


def _model_visible(request: Request, record: Any) -> None:
    if _hidden(request)(record.experiment):
        raise NotFoundError(f"no model {record.name!r} in this workspace")


_PAGE: list[tuple[bytes, str]] = []


def _page() -> Response:
    """The pages' HTML shell, read once, served with an ETag."""
    if not _PAGE:
        with open(os.path.join(STATIC, "models.html"), "rb") as fh:
            data = fh.read()
        _PAGE.append((data, hashlib.sha256(data).hexdigest()[:16]))
    data, etag = _PAGE[0]
    return Response(data, media_type="text/html; charset=utf-8",
                    headers={"cache-control": "no-cache", "etag": f'"{etag}"'})


def _registry(request: Request) -> Any:
    from torchyard.workspace.models import ModelRegistry  # noqa: PLC0415

    ws = _ctx(request).workspace
    return ModelRegistry(ws.store, ws.snapshots)


def _version(request: Request) -> int:
    raw = request.path_params["version"]
    if not raw.isdigit() or int(raw) < 1:
        raise SpecError("version", f"must be a positive integer, got {raw!r}")
    return int(raw)


def _tail_lines(request: Request) -> int:
    return _int(request, "lines", TAIL_LINES, 1, 5000) or TAIL_LINES


def _tail(path: str, lines: int) -> str:
    """The last ``lines`` lines of a text file (at most 256 KiB read), or "" if there is none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text else "")


# ---- models -----------------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/models", permission=READ, params=(
    ("name", "string", "only this model name's versions"),
    ("tag", "array", "KEY or KEY=VALUE; repeat for several"),
    ("latest", "boolean", "only the newest version of each name"),
))
def list_models(request: Request) -> Response:
    """Registered model versions, by name then newest first, with tags, aliases and lineage."""
    qp = request.query_params
    tags: dict[str, str | None] = {}
    for item in qp.getlist("tag"):
        key, sep, value = item.partition("=")
        if not key:
            raise SpecError("tag", f"must be KEY or KEY=VALUE, got {item!r}")
        tags[key] = value if sep else None
    latest = qp.get("latest", "0") not in ("0", "false", "no", "")
    records = _registry(request).list(name=qp.get("name") or None, tags=tags or None, latest=latest)
    hidden = _hidden(request)
    return _json({"models": [r.to_dict() for r in records if not hidden(r.experiment)]})


@endpoint("GET", "/api/v1/models/{name}", permission=READ)
def get_model(request: Request) -> Response:
    """A model name: its versions (newest first), its aliases, and every re-point of them."""
    reg = _registry(request)
    name = request.path_params["name"]
    hidden = _hidden(request)
    versions = [r for r in reg.list(name=name) if not hidden(r.experiment)]
    if not versions:
        raise NotFoundError(f"no model {name!r} in this workspace; GET /api/v1/models lists them")
    aliases = {a: r.version for r in versions for a in r.aliases}
    return _json({"name": name, "versions": [r.to_dict() for r in versions], "aliases": aliases,
                  "alias_history": reg.alias_history(name)})


@endpoint("GET", "/api/v1/models/{name}/versions/{version}", permission=READ)
def get_model_version(request: Request) -> Response:
    """One model version: files' digest and size, tags, properties, aliases, lineage (run and
    experiment), and the services that serve it."""
    from torchyard.workspace.services import services_using  # noqa: PLC0415

    reg = _registry(request)
    record = reg.get(request.path_params["name"], _version(request))
    _model_visible(request, record)
    ws = _ctx(request).workspace
    run_exists = False
    if record.run_id:
        try:
            ws.store.get_run(record.run_id)
            run_exists = True
        except NotFoundError:
            pass
    return _json({"model": record.to_dict(), "run_exists": run_exists,
                  "services": services_using(ws.path, record.id)})


# ---- services and endpoints -------------------------------------------------------------------------


def _service_summary(svc: Any) -> dict[str, Any]:
    details = svc.get_details()
    status = details.get("status") or {}
    cfg = details.get("config") or {}
    workers = status.get("workers") or []
    return {
        "name": svc.name,
        "state": details["state"],
        "scoring_uri": details.get("scoring_uri"),
        "swagger_uri": svc.swagger_uri,
        "models": [m["id"] for m in details.get("models", [])],
        "generation": status.get("generation"),
        "restarts": int(status.get("restarts") or 0),
        "last_crash": status.get("last_crash"),
        "workers": [{"label": w.get("label"), "pid": w.get("pid"), "ready": w.get("ready"),
                     "draining": w.get("draining"), "generation": w.get("generation")} for w in workers],
        "replicas": status.get("replicas"),
        "update": status.get("update"),
        "error": status.get("error"),
        "deployment_target": details.get("deployment_target"),
        "auth_enabled": bool(cfg.get("auth_enabled")),
        "config": {k: cfg.get(k) for k in ("workers", "max_concurrent_requests", "request_timeout_ms",
                                            "max_batch_size", "max_batch_delay_ms", "max_request_bytes",
                                            "num_replicas")},
        "entry_script": details.get("entry_script"),
        "created_at": details.get("created_at"),
        "endpoint": svc.name.split(".", 1)[0] if "." in svc.name else None,
    }


@endpoint("GET", "/api/v1/services", permission=READ)
def list_services(request: Request) -> Response:
    """Every model service of the workspace: state, address, models, workers, restarts."""
    from torchyard.models.webservice import Webservice  # noqa: PLC0415

    out = []
    for svc in Webservice.list(_ctx(request).workspace):
        try:
            summary = _service_summary(svc)
        except NotFoundError:  # deleted while we read
            continue
        if _serves_visible(request, summary["models"]):
            out.append(summary)
    return _json({"services": out})


def _serves_visible(request: Request, model_ids: list[str]) -> bool:
    """A service is shown when it serves no model, or one the caller may see."""
    hidden = _hidden(request)
    if not model_ids:
        return True
    reg = _registry(request)
    for model_id in model_ids:
        name, _sep, version = str(model_id).rpartition(":")
        try:
            if not hidden(reg.get(name, int(version)).experiment):
                return True
        except (NotFoundError, ValueError):
            return True  # a model deleted since: nothing of an experiment to hide
    return False


@endpoint("GET", "/api/v1/services/{name}", permission=READ, params=(
    ("lines", "integer", "lines of each log file's tail (default 200)"),
))
def get_service(request: Request) -> Response:
    """A service as in the list, with the tail of its supervisor's and workers' logs."""
    from torchyard.models.webservice import Webservice  # noqa: PLC0415

    svc = Webservice(_ctx(request).workspace, request.path_params["name"])
    summary = _service_summary(svc)
    if not _serves_visible(request, summary["models"]):
        raise NotFoundError(f"no service {svc.name!r} in this workspace")
    return _json({"service": summary, "logs": svc.get_logs(num_lines=_tail_lines(request))})


def _endpoint_summary(ep: Any) -> dict[str, Any]:
    shown = ep.show()
    return {
        "name": ep.name,
        "state": shown["state"],
        "scoring_uri": shown["scoring_uri"],
        "auth_mode": shown.get("auth_mode"),
        "traffic": shown["traffic"],
        "mirror": shown["mirror"],
        "restarts": shown.get("restarts", 0),
        "last_crash": shown.get("last_crash"),
        "max_request_bytes": shown.get("max_request_bytes"),
        "deployments": shown["deployments"],
    }


@endpoint("GET", "/api/v1/endpoints", permission=READ)
def list_endpoints(request: Request) -> Response:
    """Every online endpoint: state, address, traffic split, mirror, deployments and their states."""
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    out = []
    for ep in Endpoint.list(_ctx(request).workspace):
        try:
            summary = _endpoint_summary(ep)
        except NotFoundError:
            continue
        if _endpoint_visible(request, summary):
            out.append(summary)
    return _json({"endpoints": out})


def _endpoint_visible(request: Request, summary: dict[str, Any]) -> bool:
    """An endpoint is shown when it has no deployment, or one serving what the caller may see."""
    deployments = list(summary["deployments"].values())
    return not deployments or any(_serves_visible(request, list(d.get("models") or [])) for d in deployments)


@endpoint("GET", "/api/v1/endpoints/{name}", permission=READ, params=(
    ("lines", "integer", "lines of the router log's tail (default 200)"),
))
def get_endpoint(request: Request) -> Response:
    """An endpoint as in the list, with the tail of its router's log."""
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    ep = Endpoint(_ctx(request).workspace, request.path_params["name"])
    summary = _endpoint_summary(ep)
    if not _endpoint_visible(request, summary):
        raise NotFoundError(f"no endpoint {ep.name!r} in this workspace")
    log = _tail(os.path.join(ep._dir, "logs", "router.txt"), _tail_lines(request))
    return _json({"endpoint": summary, "logs": log})


# ---- pages ------------------------------------------------------------------------------------------------


def _models_page(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        """A models or services page (one HTML shell; its script reads the API)."""
        return _page()

    page.__name__ = page.__qualname__ = f"page_{name}"
    return page


for _name, _path in (("models", "/models"), ("model", "/models/{name}"),
                     ("model_version", "/models/{name}/versions/{version}"), ("services", "/services"),
                     ("service", "/services/{name}"), ("endpoint", "/endpoints/{name}")):
    endpoint("GET", _path, permission=READ)(_models_page(_name))
