"""The routes a remote workspace (``Workspace(url=..., token=...)``) needs beyond the dashboard's:
content-addressed snapshot upload, submit, a run's status and metrics, tags and ``run.log``.

Submit: the client snapshots its source folder locally, asks which objects the server lacks
(``POST /api/v1/objects/missing``), uploads only those (``PUT /api/v1/objects/SHA256``, verified),
records the manifest (``POST /api/v1/snapshots``) and submits (``POST /api/v1/runs``). The server
materializes the snapshot into ``uploads/<manifest>`` (hard links) and submits from there through
the runtime's one submit path, so the run's supervisor runs on the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from torchyard.errors import NotFoundError, SpecError
from torchyard.server.auth import Forbidden, current, require_experiment
from torchyard.server.routing import READ, WRITE, _ctx, _int, _json, _public, _run_row, _sdk_run, endpoint
from torchyard.server.security import MAX_OBJECT
from torchyard.server.wire import LogValues, MissingObjects, PutSnapshot, RunToken, SetTags, SubmitRun, parsed

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_FILES = 100_000
MAX_TAGS = 100
MAX_VALUES = 100_000


def _sha(value: Any, field: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA_RE.match(value):
        raise SpecError(field, "must be 64 lowercase hex digits")
    return value


# ---- snapshot objects --------------------------------------------------------------------------------


@endpoint("POST", "/api/v1/objects/missing", permission=WRITE, body=MissingObjects)
async def missing_objects(request: Request) -> Response:
    """Of {"objects": [[sha256, size], ...]}, those the server does not have yet."""
    ctx = _ctx(request)
    items = parsed(request, MissingObjects).objects
    if len(items) > MAX_FILES:
        raise SpecError("objects", f"must be a list of at most {MAX_FILES} [sha256, size] pairs")
    pairs = []
    for sha, size in items:
        if size < 0:
            raise SpecError("objects", "each entry must be [sha256, size] with a size of 0 or more")
        pairs.append((_sha(sha), size))
    store = ctx.workspace.snapshots

    def check() -> list[str]:
        return [sha for sha, size in pairs if not store._has_object(sha, size)]

    return _json({"missing": await asyncio.to_thread(check)})


@endpoint("PUT", "/api/v1/objects/{sha256}", permission=WRITE, raw_body="application/octet-stream", status=201)
async def put_object(request: Request) -> Response:
    """Upload one object's bytes (application/octet-stream); kept only if its SHA-256 matches."""
    ctx = _ctx(request)
    sha = _sha(request.path_params["sha256"])
    store = ctx.workspace.snapshots
    tmp = os.path.join(store.tmp_dir, f"upload-{os.getpid()}-{secrets.token_hex(8)}")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_OBJECT:
                    raise SpecError("body", f"an object is at most {MAX_OBJECT} bytes")
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha:
            raise SpecError("body", f"content hashes to {digest.hexdigest()}, not {sha}")
        final = store.object_path(sha)
        if not store._has_object(sha, size):
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return _json({"sha256": sha, "size": size}, 201)


def _place_object(store: Any, sha: str, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != sha:
        raise SpecError("body", f"content does not hash to {sha}")
    if store._has_object(sha, len(data)):
        return
    final = store.object_path(sha)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = os.path.join(store.tmp_dir, f"upload-{os.getpid()}-{secrets.token_hex(8)}")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@endpoint("PUT", "/api/v1/packs", permission=WRITE, raw_body="application/octet-stream", status=201)
async def put_pack(request: Request) -> Response:
    """Many small objects in one body (application/octet-stream): for each, its SHA-256 as 64 hex
    digits, its length as 8 bytes big-endian, then its bytes. Each is kept only if it hashes right."""
    ctx = _ctx(request)
    body = await request.body()
    store = ctx.workspace.snapshots

    def work() -> int:
        pos, count = 0, 0
        while pos < len(body):
            if pos + 72 > len(body):
                raise SpecError("body", "a truncated pack entry")
            sha = _sha(body[pos:pos + 64].decode("ascii", "replace"))
            size = int.from_bytes(body[pos + 64:pos + 72], "big")
            data = body[pos + 72:pos + 72 + size]
            if len(data) != size:
                raise SpecError("body", "a truncated pack entry")
            _place_object(store, sha, data)
            pos += 72 + size
            count += 1
        return count

    return _json({"stored": await asyncio.to_thread(work)}, 201)


def _rel_path(value: Any) -> str:
    if (not isinstance(value, str) or not value or len(value) > 4096 or value.startswith("/") or "\\" in value
            or "\x00" in value or any(p in ("", ".", "..") for p in value.split("/"))):
        raise SpecError("files.path", f"{value!r} is not a relative path inside the tree")
    return value


@endpoint("POST", "/api/v1/snapshots", permission=WRITE, body=PutSnapshot, status=201)
async def put_snapshot(request: Request) -> Response:
    """Record a snapshot manifest {"files": [{"path", "sha256", "size", "executable"}]} whose objects
    are all uploaded; its id (same files → same id)."""
    from torchyard.workspace.snapshots import SnapshotFile  # noqa: PLC0415

    ctx = _ctx(request)
    items = parsed(request, PutSnapshot).files
    if not items or len(items) > MAX_FILES:
        raise SpecError("files", f"must be a list of 1 to {MAX_FILES} files")
    files = []
    seen = set()
    for item in items:
        path = _rel_path(item.path)
        if path in seen:
            raise SpecError("files.path", f"{path!r} is listed twice")
        seen.add(path)
        if item.size < 0:
            raise SpecError("files.size", "must be a non-negative integer")
        files.append(SnapshotFile(path, _sha(item.sha256, "files.sha256"), item.size, item.executable))
    files.sort(key=lambda f: f.path)
    store = ctx.workspace.snapshots

    def write() -> str:
        lacking = [f.path for f in files if not store._has_object(f.sha256, f.size)]
        if lacking:
            raise SpecError("files", f"{len(lacking)} objects are not uploaded yet (first: {lacking[0]!r})")
        return str(store._write_manifest(tuple(files), sum(f.size for f in files)))

    return _json({"snapshot": await asyncio.to_thread(write)}, 201)


# ---- submit -----------------------------------------------------------------------------------------


def _str_map(value: dict[str, Any] | None, field: str) -> dict[str, str]:
    """A map of scalars (typed by ``server/wire.py``) as strings, at most ``MAX_TAGS`` entries."""
    if value is None:
        return {}
    if len(value) > MAX_TAGS:
        raise SpecError(field, f"must be an object of at most {MAX_TAGS} entries")
    return {str(k)[:256]: str(v) for k, v in value.items()}


def _may_create(ctx: Any, experiment: str) -> None:
    """A new experiment: members and admins may create it (and then MANAGE it); an existing one
    needs EDIT (invisible → 404)."""
    from sqlalchemy import select  # noqa: PLC0415

    from torchyard.workspace.schema import experiments  # noqa: PLC0415

    with ctx.engine.connect() as conn:
        exists = conn.execute(select(experiments.c.name).where(experiments.c.name == experiment)).first()
    principal, _ = current()
    if not exists:
        if principal.role not in ("admin", "member"):
            raise Forbidden(f"{principal.user} ({principal.role}) may not create experiments")
        if not getattr(ctx.auth, "users", False):
            return
        ctx.auth.access.claim_experiment(experiment, principal.user)
    # Checked after the claim too: another user may have created it in between.
    require_experiment(ctx.auth, experiment, "EDIT")


def materialize_upload(ws: Any, snap: str) -> str:
    """The folder ``uploads/<snap>`` of the server's workspace holding an uploaded manifest's files
    (read-only hard links, placed once; a concurrent placement wins and the loser's copy goes)."""
    folder = os.path.join(ws.path, "uploads", snap)
    if not os.path.isdir(folder):
        tmp = f"{folder}.{secrets.token_hex(6)}.tmp"
        ws.snapshots.materialize(snap, tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another submit placed it first
            import shutil  # noqa: PLC0415

            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@endpoint("POST", "/api/v1/runs", permission=WRITE, body=SubmitRun, status=201)
async def submit(request: Request) -> Response:
    """Submit a job: {"experiment", "spec" (a JobSpec as JSON), "snapshot" (an uploaded manifest id),
    "tags", "client_source"}. The server records the run and starts its supervisor; the run id."""
    from torchyard.spec.job import JobSpec, build_job_spec  # noqa: PLC0415
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, SubmitRun)
    experiment = check_name(body.experiment)
    snap = _sha(body.snapshot, "snapshot")
    tags = _str_map(body.tags, "tags")
    raw_spec = body.spec
    principal, _ = current()

    def work() -> str:
        _may_create(ctx, experiment)
        ws = ctx.workspace
        folder = materialize_upload(ws, snap)
        fields = {k: v for k, v in raw_spec.items() if k in JobSpec.__struct_fields__}
        fields["source_directory"] = folder
        for key in ("arguments",):
            if isinstance(fields.get(key), list):
                fields[key] = tuple(fields[key])
        spec = build_job_spec(**fields)
        run_id = ws.submit(experiment, spec, tags=tags, created_by=principal.user)
        client = body.client_source
        if client is not None and len(client) < 4096:
            ws.store.add_properties(run_id, {"torchyard.client_source_directory": client})
        return str(run_id)

    run_id = await asyncio.to_thread(work)
    return _json({"run_id": run_id, "experiment": experiment}, 201)


# ---- a run, for the SDK ------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/runs/{run_id}/status", permission=READ)
def run_status(request: Request) -> Response:
    """A run's status (liveness reconciled on the server, where its supervisor is)."""
    from torchyard.runtime.liveness import reconcile  # noqa: PLC0415

    ctx = _ctx(request)
    row = reconcile(ctx.store, _run_row(ctx, request.path_params["run_id"]))
    return _json({"run_id": row["id"], "status": row["status"], "experiment": row["experiment"],
                  "kind": row.get("kind")})


@endpoint("GET", "/api/v1/runs/{run_id}/details", permission=READ, params=(
    ("summary", "boolean", "also the run's metric summary"),
))
def run_details(request: Request) -> Response:
    """``Run.get_details()``, as the SDK returns it (log file paths left out), plus the run's row."""

    ctx = _ctx(request)
    run = _sdk_run(ctx, request.path_params["run_id"])
    details = run.get_details()
    details.pop("logFiles", None)
    summary = run._summary() if request.query_params.get("summary") in ("1", "true") else None
    return _json({"details": details, "summary": summary, "run": {**_public(run._row), "kind": run._row.get("kind"),
                                              "created_by": run._row.get("created_by")}})


@endpoint("GET", "/api/v1/runs/{run_id}/values", permission=READ, params=(
    ("rank", "string", "a rank number or 'all' (default 0)"),
    ("name", "string", "only this metric"),
))
def run_values(request: Request) -> Response:
    """``Run.get_metrics(name, rank)``: every logged value (for ``rank=all``: by rank)."""
    ctx = _ctx(request)
    run = _sdk_run(ctx, request.path_params["run_id"])
    raw = request.query_params.get("rank", "0")
    rank: int | str = "all" if raw == "all" else _rank(raw)
    metrics = run.get_metrics(request.query_params.get("name") or None, rank=rank)
    return _json({"metrics": metrics, "rank": rank})


def _rank(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SpecError("rank", f"must be a rank number or 'all', got {raw!r}") from None
    if not 0 <= value < 1 << 20:
        raise SpecError("rank", "out of range")
    return value


@endpoint("GET", "/api/v1/runs/{run_id}/files", permission=READ)
def run_files(request: Request) -> Response:
    """``Run.get_file_names()``: artifact paths (local or in the artifact datastore)."""
    ctx = _ctx(request)
    run = _sdk_run(ctx, request.path_params["run_id"])
    return _json({"files": run.get_file_names()})


@endpoint("POST", "/api/v1/runs/{run_id}/tags", permission=WRITE, body=SetTags)
async def set_tags(request: Request) -> Response:
    """Set tags on a run: {"tags": {KEY: VALUE}} (needs EDIT on its experiment)."""
    ctx = _ctx(request)
    tags = _str_map(parsed(request, SetTags).tags, "tags")

    def work() -> dict[str, str]:
        row = _run_row(ctx, request.path_params["run_id"])
        ctx.store.set_tags(row["id"], tags)
        return dict(ctx.store.get_tags(row["id"]))

    return _json({"tags": await asyncio.to_thread(work)})


@endpoint("POST", "/api/v1/runs/{run_id}/log", permission=WRITE, body=LogValues)
async def log_values(request: Request) -> Response:
    """``run.log`` from outside the run, batched: {"rank": 0, "series": [[name, [values], [steps|null], [ts]]]}."""
    from torchyard.workspace.summary import update_summary  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, LogValues)
    rank = body.rank
    if not 0 <= rank < 1 << 20:
        raise SpecError("rank", "must be a rank number")
    series = body.series
    if not series:
        raise SpecError("series", "must be a non-empty list of [name, values, steps, times]")
    packed = []
    total = 0
    for name, vals, steps, ts in series:
        if not name:
            raise SpecError("series", "each entry must be [name, values, steps, times] with a name")
        if not len(vals) == len(steps) == len(ts):
            raise SpecError("series", f"{name!r}: values, steps and times must be lists of one length")
        total += len(vals)
        packed.append((name[:256], vals, steps, ts))
    if total > MAX_VALUES:
        raise SpecError("series", f"at most {MAX_VALUES} values per request")

    def work() -> None:
        row = _run_row(ctx, request.path_params["run_id"])
        ctx.store.insert_series(row["id"], rank, packed)
        update_summary(ctx.store.engine, row["id"], rank, packed)

    await asyncio.to_thread(work)
    return _json({"stored": total, "at": time.time()})


@endpoint("GET", "/api/v1/experiments/{name}/runs", permission=READ, params=(
    ("status", "string", "only runs with this status"),
    ("limit", "integer", "at most this many, 1-10000"),
))
def experiment_runs(request: Request) -> Response:
    """``Experiment.get_runs()``: the experiment's runs (rows), newest first."""

    ctx = _ctx(request)
    name = request.path_params["name"]
    try:
        require_experiment(ctx.auth, name, "READ")
    except NotFoundError:
        return _json({"runs": []})  # as for an experiment with no runs: nothing said about it
    rows = ctx.store.list_runs(experiment=name, status=request.query_params.get("status") or None,
                               limit=_int(request, "limit", 1000, 1, 10000))
    return _json({"runs": [{**_public(r), "kind": r.get("kind"), "created_by": r.get("created_by")} for r in rows]})


# ---- in-job reporting over HTTP (nodes that cannot reach the database or the run folder) -----------


@endpoint("POST", "/api/v1/runs/{run_id}/token", permission=WRITE, body=RunToken, status=201)
async def run_token(request: Request) -> Response:
    """A token for the run's own nodes: scoped to this run (only its mirror routes), expiring when the
    run ends (or after {"hours": N}, default 168); needs EDIT on the experiment. Shown once."""
    ctx = _ctx(request)
    hours = parsed(request, RunToken).hours
    if not 0 < hours <= 24 * 31:
        raise SpecError("hours", "must be a number of hours between 0 and 744")
    principal, _ = current()

    def work() -> tuple[str, str]:
        row = _run_row(ctx, request.path_params["run_id"], "EDIT")
        if not getattr(ctx.auth, "users", False):
            raise SpecError("token", "per-run tokens come from `torchyard server`")
        made: tuple[str, str] = ctx.auth.access.create_token(
            principal.user, scope="write", expires_in=float(hours) * 3600, kind="run", run_id=row["id"],
            description=f"nodes of run {row['id']}")
        return made

    token_id, token = await asyncio.to_thread(work)
    return _json({"id": token_id, "token": token, "run_id": request.path_params["run_id"]}, 201)


# ---- what the server's workspace has (names only: configurations and credentials stay here) ---------


@endpoint("GET", "/api/v1/compute", permission=READ)
def list_compute(request: Request) -> Response:
    """The compute targets attached to the server's workspace: name and kind (no configuration)."""
    ws = _ctx(request).workspace
    return _json({"compute": [{"name": r["name"], "kind": r.get("kind")} for r in ws.compute_targets.list()]})


@endpoint("GET", "/api/v1/datastores", permission=READ)
def list_datastores(request: Request) -> Response:
    """The server's datastores: names and kinds only (URLs, options and credentials stay on the server)."""
    ws = _ctx(request).workspace
    stores = {d.name: d for d in (ws.get_default_datastore(), *ws.datastores.list())}  # the default: once
    return _json({"datastores": [{"name": d.name, "kind": d.kind} for d in stores.values()]})


@endpoint("GET", "/api/v1/environments", permission=READ)
def list_environments(request: Request) -> Response:
    """The environments registered on the server: name and version."""
    ws = _ctx(request).workspace
    return _json({"environments": [{"name": e.name, "version": e.version} for e in ws.environments.list()]})
