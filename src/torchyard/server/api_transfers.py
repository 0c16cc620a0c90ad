"""Datastore files and environment builds through the team server: the routes behind a remote
client's ``torchyard datastore upload|download`` (``remote_ws.datastores.get(NAME).upload/download``)
and ``torchyard env export|prune``.

Datastore transfers use the SERVER's credentials (its environment or profile): the client never
learns a datastore's URL, bucket or options, and no answer or error names them. Uploading: the
client uploads the files content-addressed (``objects/missing``, ``packs``, ``snapshots``, as a
run's code: each object is bounded by the server's object limit, unchanged files travel once) and
posts the manifest's id; the server places the files in a temporary folder and copies them into the
datastore. Downloading: the client lists the files under a prefix and streams each one back. Paths
are datastore paths ('/'-separated, no '..', no NUL); a local datastore's file is served only when it
resolves inside the datastore's folder (a symbolic link out of it is a 404).

Permissions: members and admins (the ``write`` permission) may upload and download — they read the
datastores in their runs already; viewers may not (403). Pruning environment builds is admin only;
exporting a run's environment needs READ on its experiment.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from torchyard.errors import DataError, NotFoundError, SpecError
from torchyard.server.api_remote import _sha
from torchyard.server.auth import current
from torchyard.server.routing import ADMIN, READ, WRITE, _ctx, _json, _sdk_run, endpoint
from torchyard.server.wire import DatastoreUpload, PruneEnvironments, parsed

#: at most this many paths in one listing (a bigger prefix is refused: list a narrower one)
MAX_LISTING = 100_000
CHUNK = 1 << 20


def _datastore(request: Request) -> Any:
    """The datastore named in the path (a bad or unknown name: 404)."""
    from torchyard.data.datastore import Datastore  # noqa: PLC0415
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    name = request.path_params["name"]
    try:
        check_name(name, "name")
    except SpecError:
        raise NotFoundError(f"no datastore {name!r} on the server") from None
    try:
        return Datastore.get(_ctx(request).workspace, name)
    except NotFoundError:
        raise NotFoundError(f"no datastore {name!r} on the server; `torchyard datastore list` names them") from None


def _clean(path: Any, field: str) -> str:
    from torchyard.data.references import _clean_path  # noqa: PLC0415

    if path is not None and (not isinstance(path, str) or "\x00" in path or len(path) > 4096):
        raise SpecError(field, "must be a datastore path ('/'-separated, no NUL)")
    return _clean_path(path, field)


def _quiet(ds: Any, err: DataError) -> DataError:
    """A data error without what the datastore is configured with (its URL stays on the server)."""
    text = str(err)
    _scheme, sep, rest = ds.url.partition("://")
    named = {ds.url, ds.url.rstrip("/"), os.path.realpath(ds.url) if ds.kind == "local" else "",
             rest.split("/")[0] if sep else "", os.environ.get("AWS_ENDPOINT_URL", ""),
             *(str(v) for v in ds.options.values())}
    for secret in sorted((n for n in named if len(n) >= 3), key=len, reverse=True):  # longest first
        text = text.replace(secret, f"<{ds.name}>")
    return DataError(text)


@endpoint("GET", "/api/v1/datastores/{name}/files", permission=WRITE, params=(
    ("prefix", "string", "a path inside the datastore (default: everything)"),
))
def datastore_files(request: Request) -> Response:
    """The paths of the files at or under ``prefix`` in a server's datastore (members and admins)."""
    ds = _datastore(request)
    prefix = _clean(request.query_params.get("prefix"), "prefix")
    try:
        paths = ds.list(prefix)
    except DataError as err:
        raise _quiet(ds, err) from None
    if len(paths) > MAX_LISTING:
        raise SpecError("prefix", f"more than {MAX_LISTING} files under {prefix or 'the root'!r}; name a narrower one")
    return _json({"datastore": ds.name, "prefix": prefix, "files": paths})


@endpoint("GET", "/api/v1/datastores/{name}/files/{path:path}", permission=WRITE)
def datastore_file(request: Request) -> Response:
    """One file of a server's datastore, streamed (read with the server's credentials)."""
    ds = _datastore(request)
    path = _clean(request.path_params["path"], "path")
    missing = NotFoundError(f"datastore {ds.name!r} has no file {path!r}")
    if not path:
        raise missing
    headers = {"cache-control": "no-store", "content-disposition": "attachment"}
    if ds.kind == "local":
        root = os.path.realpath(ds.url)
        real = os.path.realpath(ds.url_of(path))
        if not real.startswith(root + os.sep) or not os.path.isfile(real):
            raise missing
        return FileResponse(real, media_type="application/octet-stream", headers=headers)
    try:
        fs = ds.filesystem()
    except DataError as err:
        raise _quiet(ds, err) from None
    url = ds.url_of(path)
    try:
        if not fs.isfile(url):
            raise missing
        handle = fs.open(url, "rb")
    except NotFoundError:
        raise
    except FileNotFoundError:
        raise missing from None
    except Exception as err:  # noqa: BLE001 - the store's own error, without its URL
        raise DataError(f"datastore {ds.name!r}: cannot read {path!r} ({type(err).__name__})") from None

    def chunks() -> Iterator[bytes]:
        with handle:
            while True:
                data = handle.read(CHUNK)
                if not data:
                    return
                yield data

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


@endpoint("POST", "/api/v1/datastores/{name}/upload", permission=WRITE, body=DatastoreUpload, status=201)
async def datastore_upload(request: Request) -> Response:
    """Copy an uploaded manifest's files {"snapshot"} into a server's datastore under {"target"}
    (default: its root), keeping their relative paths; {"overwrite": false} keeps existing files.
    Answers how many files were written."""
    body = parsed(request, DatastoreUpload)
    snap = _sha(body.snapshot, "snapshot")
    target = _clean(body.target, "target")
    overwrite = body.overwrite
    ctx = _ctx(request)
    principal, _ = current()

    def work() -> dict[str, Any]:
        ds = _datastore(request)
        ws = ctx.workspace
        if not os.path.exists(ws.snapshots.manifest_path(snap)):
            raise SpecError("snapshot", "is not an uploaded manifest (POST /api/v1/snapshots first)")
        manifest = ws.snapshots.load(snap)
        tmp = tempfile.mkdtemp(prefix="datastore-", dir=ws.snapshots.tmp_dir)
        try:
            ws.snapshots.materialize(snap, tmp)
            try:
                count = ds.upload(tmp, target_path=target or None, overwrite=overwrite)
            except DataError as err:
                raise _quiet(ds, err) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        ctx.auth.audit(principal.user, "datastore.upload", ds.name, path=target, files=count)
        return {"datastore": ds.name, "target": target, "uploaded": count, "files": manifest.file_count,
                "bytes": manifest.total_bytes}

    return _json(await asyncio.to_thread(work), 201)


# ---- environments ------------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/runs/{run_id}/environment", permission=READ)
def run_environment(request: Request) -> Response:
    """The environment a run used (``torchyard env export``): its python, cache key and the exact
    packages installed in it."""
    ctx = _ctx(request)
    run = _sdk_run(ctx, request.path_params["run_id"])
    env = run.get_environment()
    return _json({"run": run.id, "environment": {k: env.get(k) for k in
                                                 ("python", "base_python", "key", "cached", "packages")}})


@endpoint("POST", "/api/v1/environments/prune", permission=ADMIN, body=PruneEnvironments)
async def prune_environments(request: Request) -> Response:
    """Remove the server's cached environment builds unused for {"older_than_days"} (default 7) that
    no live run uses (admins). Answers the keys removed."""
    from torchyard.environments import prune  # noqa: PLC0415
    from torchyard.status import ACTIVE_VALUES  # noqa: PLC0415

    days = parsed(request, PruneEnvironments).older_than_days
    if not 0 <= days <= 36_500:
        raise SpecError("older_than_days", "must be a number of days between 0 and 36500")
    ctx = _ctx(request)
    principal, _ = current()

    def work() -> list[str]:
        ws = ctx.workspace
        in_use = set()
        for row in ws.store.list_runs():
            if row["status"] in ACTIVE_VALUES:
                key = json.loads(row["details"] or "{}").get("environment", {}).get("key")
                if key:
                    in_use.add(key)
        removed: list[str] = prune(ws.path, float(days) * 86400, in_use)
        ctx.auth.audit(principal.user, "environment.prune", None, removed=removed)
        return removed

    return _json({"removed": await asyncio.to_thread(work)})

