"""Registrations through the team server (admin only; every reader may list): environments,
datastores and compute targets of the server's workspace, for a remote client's ``torchyard env
register``, ``torchyard datastore add`` and ``torchyard compute add|remove``.

What is registered stays on the server: the read routes answer names and kinds (and an
environment's packages), never a datastore's URL, bucket, endpoint, profile or options, nor a
compute target's settings. A requirements or conda file named by an environment travels as its
text and is kept in the server's workspace (``uploads/environment-files/SHA256.txt``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from torchyard.errors import NotFoundError, SpecError
from torchyard.server.auth import current
from torchyard.server.routing import ADMIN, READ, _ctx, _json, endpoint
from torchyard.server.wire import AttachCompute, RegisterDatastore, RegisterEnvironment, parsed

MAX_FILE_TEXT = 256 * 1024


def _strings(value: list[str] | None, field: str) -> list[str]:
    if value is None:
        return []
    if len(value) > 1000 or not all(len(v) < 1000 for v in value):
        raise SpecError(field, "must be a list of at most 1000 package specifications (strings)")
    return list(value)


def _opt_str(value: str | None, key: str, limit: int = 1024) -> str | None:
    """A string field's value (its type checked by ``server/wire.py``), at most ``limit`` characters."""
    if value is not None and len(value) > limit:
        raise SpecError(key, f"must be a string of at most {limit} characters")
    return value


def _keep_text(ws: Any, text: str | None, field: str) -> str | None:
    """An uploaded requirements/conda file's text, kept in the server's workspace; its path there."""
    if text is None:
        return None
    if len(text) > MAX_FILE_TEXT:
        raise SpecError(field, f"must be the file's text (at most {MAX_FILE_TEXT} bytes)")
    folder = os.path.join(ws.path, "uploads", "environment-files")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, hashlib.sha256(text.encode()).hexdigest() + (".yml" if "conda" in field else ".txt"))
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return path


def _env_doc(env: Any) -> dict[str, Any]:
    doc = dict(env.to_spec_dict())
    for key in ("pip_requirements_file", "conda_dependencies_file"):  # a path on the server: only whether
        doc[key] = bool(doc.get(key))
    return doc


@endpoint("POST", "/api/v1/environments", permission=ADMIN, body=RegisterEnvironment, status=201)
async def register_environment(request: Request) -> Response:
    """Register an environment: {"name", "version", "pip_packages", "conda_packages", "python",
    "user_managed", "pip_requirements" / "conda_dependencies" (the files' text)}; its name and version."""
    from torchyard.spec.estimators import Environment  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, RegisterEnvironment)
    name = _opt_str(body.name, "name", 128)
    if not name:
        raise SpecError("name", "is required")
    version = body.version

    def work() -> dict[str, Any]:
        ws = ctx.workspace
        env = Environment(name, None if version is None else str(version),
                          pip=_strings(body.pip_packages, "pip_packages"),
                          conda=_strings(body.conda_packages, "conda_packages"),
                          python=_opt_str(body.python, "python", 256), user_managed=body.user_managed,
                          pip_requirements_file=_keep_text(ws, body.pip_requirements, "pip_requirements"),
                          conda_dependencies_file=_keep_text(ws, body.conda_dependencies, "conda_dependencies"))
        registered = ws.environments.register(env)
        ctx.auth.audit(current()[0].user, "environment.register", f"{registered.name}:{registered.version}")
        return {"name": registered.name, "version": registered.version}

    return _json({"environment": await asyncio.to_thread(work)}, 201)


@endpoint("GET", "/api/v1/environments/{name}", permission=READ, params=(
    ("version", "string", "this version (default: the latest)"),
))
def get_environment(request: Request) -> Response:
    """A registered environment: its packages and python (files: only whether there is one)."""
    ws = _ctx(request).workspace
    env = ws.environments.get(request.path_params["name"], request.query_params.get("version") or None)
    return _json({"environment": _env_doc(env)})


@endpoint("POST", "/api/v1/datastores", permission=ADMIN, body=RegisterDatastore, status=201)
async def register_datastore(request: Request) -> Response:
    """Register a datastore on the server: {"name", "kind": "local", "path"} | {"kind": "s3",
    "bucket", "prefix", "endpoint_url", "profile", "credentials"} | {"kind": "fsspec", "url",
    "options"}. Answers its name and kind only: what it names stays on the server."""
    from torchyard.data.datastore import Datastore  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, RegisterDatastore)
    kind = body.kind
    fields = {"local": {"path"}, "s3": {"bucket", "prefix", "endpoint_url", "profile", "credentials"},
              "fsspec": {"url", "options"}}
    if kind not in fields:
        raise SpecError("kind", f"must be one of {', '.join(fields)}, got {kind!r}")
    others = set().union(*fields.values()) - fields[kind]
    extra = sorted(f for f in others if getattr(body, f) is not None)
    if extra:
        raise SpecError(extra[0], f"is not a field of a datastore of kind {kind} (its fields: {', '.join(sorted(fields[kind]))})")
    name = _opt_str(body.name, "name", 128)
    if not name:
        raise SpecError("name", "is required")
    options = body.options or {}
    if len(options) > 50:
        raise SpecError("options", "must be an object of at most 50 storage options")
    reserved = sorted({"workspace", "name", "url"} & set(options))
    if reserved:
        raise SpecError("options", f"{reserved[0]!r} is not a storage option (name and url are fields of their own)")

    def work() -> dict[str, Any]:
        ws = ctx.workspace
        if kind == "local":
            ds = Datastore.register_local(ws, name, _opt_str(body.path, "path", 4096) or "")
        elif kind == "s3":
            ds = Datastore.register_s3(ws, name, body.bucket, _opt_str(body.prefix, "prefix"),  # type: ignore[arg-type]
                                       _opt_str(body.endpoint_url, "endpoint_url"),
                                       _opt_str(body.profile, "profile", 256),
                                       _opt_str(body.credentials, "credentials", 16) or "node")
        else:
            ds = Datastore.register_fsspec(ws, name, _opt_str(body.url, "url", 4096) or "", **options)
        ctx.auth.audit(current()[0].user, "datastore.register", ds.name, kind=ds.kind)
        return {"name": ds.name, "kind": ds.kind}

    return _json({"datastore": await asyncio.to_thread(work)}, 201)


@endpoint("POST", "/api/v1/compute", permission=ADMIN, body=AttachCompute, status=201)
async def attach_compute(request: Request) -> Response:
    """Attach (or re-attach) a compute target to the server's workspace: {"kind", "name", "config"
    (the kind's options, as ``torchyard compute add KIND NAME --OPTION ...`` takes them)}."""
    from torchyard.compute.base import ComputeTarget  # noqa: PLC0415
    from torchyard.compute.registry import target_class  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, AttachCompute)
    kind, name, config = body.kind, _opt_str(body.name, "name", 128), body.config or {}
    if not kind:
        raise SpecError("kind", "is required (ray, slurm, ... as `torchyard compute add --help` lists)")
    if not name:
        raise SpecError("name", "is required")
    if len(config) > 100:
        raise SpecError("config", "must be an object of the kind's options")

    def work() -> dict[str, Any]:
        cls = target_class(kind)
        unknown = set(config) - {o.name for o in cls.options}
        if unknown:
            raise SpecError("config", f"{kind} has no option {sorted(unknown)[0]!r}")
        target = ComputeTarget.attach(ctx.workspace, name, cls(name=name, **config))
        ctx.auth.audit(current()[0].user, "compute.attach", target.name, kind=target.kind)
        return {"name": target.name, "kind": target.kind}

    return _json({"compute": await asyncio.to_thread(work)}, 201)


@endpoint("DELETE", "/api/v1/compute/{name}", permission=ADMIN)
def remove_compute(request: Request) -> Response:
    """Detach a compute target from the server's workspace."""
    ctx = _ctx(request)
    name = request.path_params["name"]
    registry = ctx.workspace.compute_targets
    if name not in [r["name"] for r in registry.list()] or name == "local":
        raise NotFoundError(f"no attached compute target {name!r}")
    registry.remove(name)
    ctx.auth.audit(current()[0].user, "compute.remove", name)
    return _json({"name": name, "removed": True})
