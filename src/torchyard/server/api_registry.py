"""The model registry and model services through the team server: the write routes a remote
client's ``Model.register`` / ``run.register_model`` / ``Model.deploy`` and ``torchyard model ...``
need, and the reads of a version's files (the read routes of names and versions are
``api_models``).

Registering a path: the client uploads the file's or folder's contents content-addressed (the same
``objects/missing``, ``packs`` and ``snapshots`` routes as a run's code) and posts the manifest's id;
the server places the files (hard links) and registers them in its own registry. Registering from a
run happens entirely on the server (the run's artifacts never travel). Deploying: the entry
script's folder is uploaded the same way and the service's supervisor starts ON THE SERVER.

Permissions: a model registered from a run (or a version with an experiment) is changed with EDIT
on that experiment, and one of an experiment the caller cannot see is a 404, as for its reads; a
model with no experiment is changed by any member or admin (the route's ``write``). A new version
of an existing name needs EDIT on the experiments its versions come from (403 "the name is taken"
otherwise: nobody slips a "latest" under a model others deploy by name). Deploying needs
the ``write`` permission and that every model served is visible to the caller; a service serving
only models the caller cannot see is a 404 to it (as in ``GET /api/v1/services``).

Ownership of services and endpoints: the server records who created one (``created_by`` in its
``service.json`` / ``endpoint.json``; an endpoint's deployments belong to the endpoint's creator).
Only that user and admins may update, redeploy, regenerate the keys of, or delete it; other members
may only read it (403). One with no recorded creator (made on the server's machine, not through the
server) is changed by admins only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from torchyard.errors import NotFoundError, SpecError
from torchyard.server.api_models import _model_visible, _registry, _serves_visible, _version
from torchyard.server.api_remote import _sha, _str_map, materialize_upload
from torchyard.server.auth import current, require_experiment
from torchyard.server.routing import READ, WRITE, _ctx, _json, _run_row, _sdk_run, endpoint
from torchyard.server.wire import (
    CreateEndpoint,
    DeployService,
    DeployToEndpoint,
    ModelProperties,
    ModelTags,
    RegenKey,
    RegisterModel,
    RegisterRunModel,
    SetAlias,
    SetTraffic,
    UpdateService,
    parsed,
)


def _record(request: Request, name: str, version: int | None = None, alias: str | None = None) -> Any:
    """A version the caller may see (else the 404 of a missing one)."""
    record = _registry(request).get(name, version, alias)
    _model_visible(request, record)
    return record


def _editable(request: Request, name: str, version: int | None = None) -> Any:
    """A version the caller may change: EDIT on its experiment (hidden: 404), or any writer when it
    belongs to no experiment."""
    record = _record(request, name, version)
    if record.experiment:
        try:
            require_experiment(_ctx(request).auth, record.experiment, "EDIT")
        except NotFoundError:
            raise NotFoundError(f"no model {name!r} in this workspace") from None
    return record


def _may_add_version(request: Request, name: str) -> None:
    """A new version of an existing name needs EDIT on every experiment its versions come from, so
    nobody can slip a "latest" version under a model others deploy by name. (A refusal says the
    name is taken, not by what.)"""
    from torchyard.server.auth import Forbidden  # noqa: PLC0415

    ctx = _ctx(request)
    experiments = {r.experiment for r in _registry(request).list(name=name) if r.experiment}
    for experiment in sorted(experiments):
        try:
            require_experiment(ctx.auth, experiment, "EDIT")
        except (NotFoundError, Forbidden):
            raise Forbidden(f"the model name {name!r} is taken by versions you may not change; "
                            "register under another name") from None


def _set_model_creator(ctx: Any, name: str, version: int, user: str) -> None:
    from sqlalchemy import update  # noqa: PLC0415

    from torchyard.workspace.schema import models  # noqa: PLC0415

    with ctx.store.engine.begin() as conn:
        conn.execute(update(models).where(models.c.name == name, models.c.version == version).values(created_by=user))


def _stamp_owner(path: str, user: str) -> None:
    """Record the creator in a service's or endpoint's JSON (kept by later updates: they copy the doc)."""
    from torchyard.workspace import services  # noqa: PLC0415

    doc = services.read_json(path)
    if doc is not None:
        services.write_json(path, {**doc, "created_by": user})


def _owner(ctx: Any, kind: str, name: str) -> str | None:
    """Who created the service or endpoint ``name`` (a deployment's service: its endpoint's creator)."""
    from torchyard.workspace import services  # noqa: PLC0415

    root = ctx.workspace.path
    if kind == "service":
        endpoint_name, dot, _deployment = name.partition(".")
        edoc = services.read_json(os.path.join(services.endpoint_dir(root, endpoint_name), "endpoint.json"))
        if dot and edoc is not None and name in [d.get("service") for d in edoc.get("deployments", {}).values()]:
            return edoc.get("created_by")
        doc = services.read_json(os.path.join(services.service_dir(root, name), "service.json")) or {}
    else:
        doc = services.read_json(os.path.join(services.endpoint_dir(root, name), "endpoint.json")) or {}
    owner = doc.get("created_by")
    return owner if isinstance(owner, str) else None


def _require_owner(request: Request, kind: str, name: str) -> None:
    """Changing a service or endpoint: its creator or an admin (403 for other members)."""
    from torchyard.server.auth import Forbidden  # noqa: PLC0415

    principal, _ = current()
    if principal.role == "admin":
        return
    if _owner(_ctx(request), kind, name) != principal.user:
        raise Forbidden(f"{principal.user} may read the {kind} {name!r} but not change it: only its creator "
                        "and admins may")


def _text(value: str | None, key: str, limit: int = 10_000) -> str | None:
    """A string field's value (its type checked by ``server/wire.py``), at most ``limit`` characters."""
    if value is not None and len(value) > limit:
        raise SpecError(key, f"must be a string of at most {limit} characters")
    return value


# ---- register ------------------------------------------------------------------------------------


def _deploy_fields(body: DeployService | DeployToEndpoint) -> tuple[list[str], str, dict[str, str], dict[str, Any],
                                                                    str | None]:
    """The parts of a deploy request shared by services and endpoint deployments: the models
    ('NAME:VERSION'), the entry script, its variables, the deployment configuration and target."""
    ids = body.models
    if not ids or len(ids) > 100:
        raise SpecError("models", "must be a list of 1 to 100 'NAME:VERSION' strings")
    entry = _text(body.entry_script, "entry_script", 1024) or "score.py"
    env_vars = _str_map(body.environment_variables, "environment_variables")
    raw_cfg = body.deployment_config.given() if body.deployment_config is not None else {}
    return ids, entry, env_vars, raw_cfg, _text(body.deployment_target, "deployment_target", 128)


@endpoint("POST", "/api/v1/models", permission=WRITE, body=RegisterModel, status=201)
async def register_model(request: Request) -> Response:
    """Register uploaded files as the next version of a model: {"name", "snapshot" (an uploaded
    manifest), "kind" ("file" or "folder"), "file_name", "tags", "properties", "description",
    "framework"}. The version's record."""
    from torchyard.workspace.models import check_model_name  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, RegisterModel)
    name = check_model_name(body.name)
    snap = _sha(body.snapshot, "snapshot")
    kind = body.kind
    if kind not in ("file", "folder"):
        raise SpecError("kind", f"must be 'file' or 'folder', got {kind!r}")
    file_name = _text(body.file_name, "file_name", 255)
    if file_name is not None and (not file_name or "/" in file_name or file_name in (".", "..") or "\x00" in file_name):
        raise SpecError("file_name", f"{file_name!r} is not a file name")
    tags, props = _str_map(body.tags, "tags"), _str_map(body.properties, "properties")
    description, framework = _text(body.description, "description"), _text(body.framework, "framework", 100)
    principal, _ = current()

    def work() -> dict[str, Any]:
        ws = ctx.workspace
        if not os.path.exists(ws.snapshots.manifest_path(snap)):
            raise SpecError("snapshot", "is not an uploaded manifest (POST /api/v1/snapshots first)")
        manifest = ws.snapshots.load(snap)
        if kind == "file" and manifest.file_count != 1:
            raise SpecError("kind", f"a file model is one file; the manifest holds {manifest.file_count}")
        _may_add_version(request, name)
        tmp = tempfile.mkdtemp(prefix="model-", dir=ws.snapshots.tmp_dir)
        try:
            ws.snapshots.materialize(snap, tmp)
            path = os.path.join(tmp, manifest.files[0].path) if kind == "file" else tmp
            record = _registry(request).register(name, path, tags=tags, properties=props, description=description,
                                                 framework=framework, file_name=file_name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _set_model_creator(ctx, record.name, record.version, principal.user)
        return dict(record.to_dict())

    return _json({"model": await asyncio.to_thread(work)}, 201)


@endpoint("POST", "/api/v1/runs/{run_id}/models", permission=WRITE, body=RegisterRunModel, status=201)
async def register_run_model(request: Request) -> Response:
    """``run.register_model``: register the run's artifact {"model_path"} (a file or a folder prefix)
    as the next version of {"name"}, with lineage; needs EDIT on the run's experiment."""
    from torchyard.models.model import register_from_run  # noqa: PLC0415
    from torchyard.workspace.models import check_model_name  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, RegisterRunModel)
    name = check_model_name(body.name)
    model_path = _text(body.model_path, "model_path", 4096) or "outputs/model.pt"
    tags, props = _str_map(body.tags, "tags"), _str_map(body.properties, "properties")
    description, framework = _text(body.description, "description"), _text(body.framework, "framework", 100)
    principal, _ = current()

    def work() -> dict[str, Any]:
        _run_row(ctx, request.path_params["run_id"], "EDIT")
        _may_add_version(request, name)
        run = _sdk_run(ctx, request.path_params["run_id"])
        model = register_from_run(run, name, model_path, tags, props, description, framework)
        _set_model_creator(ctx, model.name, model.version, principal.user)
        return dict(model.serialize())

    return _json({"model": await asyncio.to_thread(work)}, 201)


# ---- a version's files -----------------------------------------------------------------------------


@endpoint("GET", "/api/v1/models/{name}/versions/{version}/files", permission=READ)
def model_files(request: Request) -> Response:
    """A version's files: path (relative to the model's folder, or the file's name), size, SHA-256."""
    record = _record(request, request.path_params["name"], _version(request))
    manifest = _ctx(request).workspace.snapshots.load(record.manifest_id)
    return _json({"model": record.id, "kind": record.kind, "file_name": record.file_name,
                  "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in manifest.files]})


@endpoint("GET", "/api/v1/models/{name}/versions/{version}/files/{path:path}", permission=READ)
def model_file(request: Request) -> Response:
    """One file of a version (looked up in its manifest by path: never a path on the server's disk)."""
    record = _record(request, request.path_params["name"], _version(request))
    store = _ctx(request).workspace.snapshots
    wanted = request.path_params["path"]
    for f in store.load(record.manifest_id).files:
        if f.path == wanted:
            return FileResponse(store.object_path(f.sha256), media_type="application/octet-stream",
                                headers={"cache-control": "no-store", "x-sha256": f.sha256})
    raise NotFoundError(f"model {record.id} has no file {wanted!r}")


# ---- change a version -----------------------------------------------------------------------------


@endpoint("POST", "/api/v1/models/{name}/versions/{version}/tags", permission=WRITE, body=ModelTags)
async def model_tags(request: Request) -> Response:
    """Set {"set": {K: V}} and remove {"remove": [K]} tags of a version."""
    body = parsed(request, ModelTags)
    tags = _str_map(body.set, "set")
    remove = body.remove or []
    if len(remove) > 100:
        raise SpecError("remove", "must be a list of at most 100 tag keys")

    def work() -> dict[str, Any]:
        record = _editable(request, request.path_params["name"], _version(request))
        _registry(request).set_tags(record.name, record.version, tags, remove=remove or None)
        return dict(_registry(request).get(record.name, record.version).to_dict())

    return _json({"model": await asyncio.to_thread(work)})


@endpoint("POST", "/api/v1/models/{name}/versions/{version}/properties", permission=WRITE, body=ModelProperties)
async def model_properties(request: Request) -> Response:
    """Add {"properties": {K: V}} to a version (add-only: another value for a set key is refused)."""
    props = _str_map(parsed(request, ModelProperties).properties, "properties")

    def work() -> dict[str, Any]:
        record = _editable(request, request.path_params["name"], _version(request))
        _registry(request).add_properties(record.name, record.version, props)
        return dict(_registry(request).get(record.name, record.version).to_dict())

    return _json({"model": await asyncio.to_thread(work)})


@endpoint("PUT", "/api/v1/models/{name}/aliases/{alias}", permission=WRITE, body=SetAlias)
async def set_model_alias(request: Request) -> Response:
    """Point an alias at {"version": N} of the model (EDIT on that version's experiment)."""
    version = parsed(request, SetAlias).version
    if version < 1:
        raise SpecError("version", "must be a positive integer")

    def work() -> dict[str, Any]:
        record = _editable(request, request.path_params["name"], version)
        _registry(request).set_alias(record.name, record.version, request.path_params["alias"])
        return dict(_registry(request).get(record.name, record.version).to_dict())

    return _json({"model": await asyncio.to_thread(work)})


@endpoint("DELETE", "/api/v1/models/{name}/aliases/{alias}", permission=WRITE)
def remove_model_alias(request: Request) -> Response:
    """Remove an alias (EDIT on the experiment of the version it points at)."""
    name, alias = request.path_params["name"], request.path_params["alias"]
    record = _editable_alias(request, name, alias)
    _registry(request).remove_alias(record.name, alias)
    return _json({"name": name, "alias": alias, "removed": True})


def _editable_alias(request: Request, name: str, alias: str) -> Any:
    try:
        record = _registry(request).get(name, None, alias)
    except NotFoundError:
        raise NotFoundError(f"model {name!r} has no alias {alias!r}") from None
    return _editable(request, name, record.version)


@endpoint("DELETE", "/api/v1/models/{name}/versions/{version}", permission=WRITE)
def delete_model(request: Request) -> Response:
    """Delete a version (refused while a service of the server uses it)."""
    from torchyard.models.model import Model  # noqa: PLC0415

    ctx = _ctx(request)
    record = _editable(request, request.path_params["name"], _version(request))
    Model(ctx.workspace, _record=record).delete()
    ctx.auth.audit(current()[0].user, "model.delete", record.id, experiment=record.experiment)
    return _json({"model": record.id, "deleted": True})


# ---- services ----------------------------------------------------------------------------------------


@endpoint("POST", "/api/v1/services", permission=WRITE, body=DeployService, status=201)
async def deploy_service(request: Request) -> Response:
    """Start a model service on the server: {"name", "models": ["NAME:VERSION"], "entry_script",
    "snapshot" (its uploaded source folder), "environment_variables", "deployment_config" (the
    fields of ``LocalWebservice.deploy_configuration``), "deployment_target", "overwrite"}."""
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, DeployService)
    name = check_name(body.name, "name")
    ids, entry, env_vars, raw_cfg, target = _deploy_fields(body)
    overwrite = body.overwrite

    def work() -> dict[str, Any]:
        from torchyard.models.webservice import InferenceConfig, LocalWebservice, deploy  # noqa: PLC0415

        # each model must be one the caller may see (else: as if it did not exist)
        records = [_record_of_id(request, model_id) for model_id in ids]
        if overwrite and _exists(ctx, name):
            _service(request, name)  # replacing one needs seeing it, and owning it
            _require_owner(request, "service", name)
        snap = _sha(body.snapshot, "snapshot")
        if not os.path.exists(ctx.workspace.snapshots.manifest_path(snap)):
            raise SpecError("snapshot", "is not an uploaded manifest (POST /api/v1/snapshots first)")
        folder = materialize_upload(ctx.workspace, snap)
        config = LocalWebservice.deploy_configuration(**raw_cfg)
        inference = InferenceConfig(entry_script=entry, source_directory=folder, environment_variables=env_vars)
        svc = deploy(ctx.workspace, name, [r.id for r in records], inference, config, target, overwrite)
        user = current()[0].user
        _stamp_owner(os.path.join(svc._dir, "service.json"), user)
        ctx.auth.audit(user, "service.deploy", name, models=[r.id for r in records])
        return {"name": svc.name, "state": svc.state, "created_by": user}

    return _json({"service": await asyncio.to_thread(work)}, 201)


def _exists(ctx: Any, name: str) -> bool:
    from torchyard.workspace import services  # noqa: PLC0415

    return name in services.list_services(ctx.workspace.path)


def _service(request: Request, name: str) -> Any:
    """A service the caller may see (else the 404 of a missing one)."""
    from torchyard.models.webservice import Webservice  # noqa: PLC0415
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    try:
        check_name(name, "name")
    except SpecError:
        raise NotFoundError(f"no service {name!r} in this workspace") from None
    svc = Webservice(_ctx(request).workspace, name)
    if not _serves_visible(request, svc.models):
        raise NotFoundError(f"no service {name!r} in this workspace")
    return svc


@endpoint("POST", "/api/v1/services/{name}/update", permission=WRITE, body=UpdateService)
async def update_service(request: Request) -> Response:
    """``Webservice.update`` on the server, with no request dropped: {"models"} and/or new code
    {"entry_script", "snapshot", "environment_variables"} and/or {"deployment_config"}."""
    ctx = _ctx(request)
    body = parsed(request, UpdateService)
    ids = body.models
    if ids is not None and (not ids or len(ids) > 100):
        raise SpecError("models", "must be a list of 1 to 100 'NAME:VERSION' strings")
    raw_cfg = body.deployment_config.given() if body.deployment_config is not None else None

    def work() -> dict[str, Any]:
        from torchyard.models.webservice import InferenceConfig, LocalWebservice  # noqa: PLC0415

        svc = _service(request, request.path_params["name"])
        _require_owner(request, "service", svc.name)
        records = [_record_of_id(request, m) for m in ids] if ids is not None else None
        inference = None
        if body.snapshot is not None:
            snap = _sha(body.snapshot, "snapshot")
            if not os.path.exists(ctx.workspace.snapshots.manifest_path(snap)):
                raise SpecError("snapshot", "is not an uploaded manifest (POST /api/v1/snapshots first)")
            inference = InferenceConfig(entry_script=_text(body.entry_script, "entry_script", 1024) or "score.py",
                                        source_directory=materialize_upload(ctx.workspace, snap),
                                        environment_variables=_str_map(body.environment_variables,
                                                                       "environment_variables"))
        config = LocalWebservice.deploy_configuration(**raw_cfg) if raw_cfg is not None else None
        svc.update(models=[r.id for r in records] if records is not None else None, inference_config=inference,
                   deployment_config=config)
        ctx.auth.audit(current()[0].user, "service.update", svc.name, models=svc.models)
        return {"name": svc.name, "state": svc.state, "models": svc.models}

    return _json({"service": await asyncio.to_thread(work)})


@endpoint("DELETE", "/api/v1/services/{name}", permission=WRITE)
def delete_service(request: Request) -> Response:
    """Stop a service on the server and remove it (its workers drain first)."""
    ctx = _ctx(request)
    svc = _service(request, request.path_params["name"])
    _require_owner(request, "service", svc.name)
    svc.delete()
    ctx.auth.audit(current()[0].user, "service.delete", svc.name)
    return _json({"name": svc.name, "deleted": True})


@endpoint("GET", "/api/v1/services/{name}/keys", permission=WRITE)
def service_keys(request: Request) -> Response:
    """A service's (primary, secondary) scoring keys (one deployed with auth_enabled)."""
    svc = _service(request, request.path_params["name"])
    primary, secondary = svc.get_keys()
    return _json({"primary": primary, "secondary": secondary})


def _key_name(body: RegenKey) -> str:
    key = body.key
    if key not in ("primary", "secondary"):
        raise SpecError("key", f"must be 'primary' or 'secondary', got {key!r}")
    return str(key)


@endpoint("POST", "/api/v1/services/{name}/keys", permission=WRITE, body=RegenKey)
async def regen_service_key(request: Request) -> Response:
    """``Webservice.regen_key``: replace {"key": "primary"|"secondary"} (the old one stops working at
    once); its creator or an admin. Answers the new pair."""
    key = _key_name(parsed(request, RegenKey))

    def work() -> dict[str, Any]:
        svc = _service(request, request.path_params["name"])
        _require_owner(request, "service", svc.name)
        svc.regen_key(key)
        _ctx(request).auth.audit(current()[0].user, "service.regen_key", svc.name, key=key)
        primary, secondary = svc.get_keys()
        return {"primary": primary, "secondary": secondary}

    return _json(await asyncio.to_thread(work))


# ---- endpoints -----------------------------------------------------------------------------------------


def _endpoint(request: Request) -> Any:
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    name = request.path_params["name"]
    try:
        check_name(name, "name")
    except SpecError:
        raise NotFoundError(f"no endpoint {name!r} in this workspace") from None
    return Endpoint(_ctx(request).workspace, name)


@endpoint("POST", "/api/v1/endpoints", permission=WRITE, body=CreateEndpoint, status=201)
async def create_endpoint(request: Request) -> Response:
    """Start an online endpoint's router on the server: {"name", "auth_mode" ("key" or null), "port",
    "host", "description", "max_request_bytes"}."""
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, CreateEndpoint)
    name = body.name
    kwargs = {k: v for k in ("auth_mode", "port", "host", "description", "max_request_bytes")
              if (v := getattr(body, k)) is not None}

    def work() -> dict[str, Any]:
        ep = Endpoint.create(ctx.workspace, name, **kwargs)
        user = current()[0].user
        _stamp_owner(os.path.join(ep._dir, "endpoint.json"), user)
        ctx.auth.audit(user, "endpoint.create", name)
        return {"name": ep.name, "state": ep.state, "created_by": user}

    return _json({"endpoint": await asyncio.to_thread(work)}, 201)


@endpoint("POST", "/api/v1/endpoints/{name}/deployments", permission=WRITE, body=DeployToEndpoint, status=201)
async def deploy_to_endpoint(request: Request) -> Response:
    """Add or replace a deployment: {"deployment", "models", "entry_script", "snapshot",
    "environment_variables", "deployment_config", "deployment_target"} (as ``POST /api/v1/services``);
    the first one takes all the traffic."""
    ctx = _ctx(request)
    body = parsed(request, DeployToEndpoint)
    deployment = body.deployment
    ids, entry, env_vars, raw_cfg, target = _deploy_fields(body)

    def work() -> dict[str, Any]:
        from torchyard.models.webservice import InferenceConfig, LocalWebservice  # noqa: PLC0415

        ep = _endpoint(request)
        _require_owner(request, "endpoint", ep.name)
        records = [_record_of_id(request, model_id) for model_id in ids]
        snap = _sha(body.snapshot, "snapshot")
        if not os.path.exists(ctx.workspace.snapshots.manifest_path(snap)):
            raise SpecError("snapshot", "is not an uploaded manifest (POST /api/v1/snapshots first)")
        folder = materialize_upload(ctx.workspace, snap)
        inference = InferenceConfig(entry_script=entry, source_directory=folder, environment_variables=env_vars)
        svc = ep.deploy(deployment, [r.id for r in records], inference,
                        LocalWebservice.deploy_configuration(**raw_cfg), target)
        ctx.auth.audit(current()[0].user, "endpoint.deploy", ep.name, deployment=deployment,
                       models=[r.id for r in records])
        return {"endpoint": ep.name, "deployment": deployment, "service": svc.name, "traffic": ep.traffic}

    return _json(await asyncio.to_thread(work), 201)


def _record_of_id(request: Request, model_id: str) -> Any:
    model_name, _sep, number = model_id.partition(":")
    try:
        version = int(number) if number else None
    except ValueError:
        raise SpecError("models", f"expected NAME or NAME:VERSION, got {model_id!r}") from None
    return _record(request, model_name, version)


@endpoint("PUT", "/api/v1/endpoints/{name}/traffic", permission=WRITE, body=SetTraffic)
async def set_endpoint_traffic(request: Request) -> Response:
    """Split live traffic {"traffic": {DEPLOYMENT: PERCENT}} and mirror {"mirror": {...}}; returns
    once the router applies it."""
    body = parsed(request, SetTraffic)

    def work() -> dict[str, Any]:
        ep = _endpoint(request)
        _require_owner(request, "endpoint", ep.name)
        if body.traffic is None:
            raise SpecError("traffic", "is required: {DEPLOYMENT: PERCENT, ...}")
        ep.set_traffic(body.traffic, body.mirror)
        return {"traffic": ep.traffic, "mirror": ep.mirror_traffic}

    return _json(await asyncio.to_thread(work))


@endpoint("DELETE", "/api/v1/endpoints/{name}/deployments/{deployment}", permission=WRITE)
def delete_endpoint_deployment(request: Request) -> Response:
    """Remove a deployment that takes no traffic."""
    ep = _endpoint(request)
    _require_owner(request, "endpoint", ep.name)
    ep.delete_deployment(request.path_params["deployment"])
    return _json({"endpoint": ep.name, "deployment": request.path_params["deployment"], "deleted": True})


@endpoint("DELETE", "/api/v1/endpoints/{name}", permission=WRITE)
def delete_endpoint(request: Request) -> Response:
    """Stop an endpoint's router and delete every deployment."""
    ctx = _ctx(request)
    ep = _endpoint(request)
    _require_owner(request, "endpoint", ep.name)
    ep.delete()
    ctx.auth.audit(current()[0].user, "endpoint.delete", ep.name)
    return _json({"endpoint": ep.name, "deleted": True})


@endpoint("GET", "/api/v1/endpoints/{name}/keys", permission=WRITE)
def endpoint_keys(request: Request) -> Response:
    """An endpoint's (primary, secondary) keys (one created with auth_mode "key")."""
    primary, secondary = _endpoint(request).get_keys()
    return _json({"primary": primary, "secondary": secondary})


@endpoint("POST", "/api/v1/endpoints/{name}/keys", permission=WRITE, body=RegenKey)
async def regen_endpoint_key(request: Request) -> Response:
    """``Endpoint.regen_key``: replace {"key": "primary"|"secondary"} (the router applies it before
    this answers); its creator or an admin. Answers the new pair."""
    key = _key_name(parsed(request, RegenKey))

    def work() -> dict[str, Any]:
        ep = _endpoint(request)
        _require_owner(request, "endpoint", ep.name)
        ep.regen_key(key)
        _ctx(request).auth.audit(current()[0].user, "endpoint.regen_key", ep.name, key=key)
        primary, secondary = ep.get_keys()
        return {"primary": primary, "secondary": secondary}

    return _json(await asyncio.to_thread(work))
