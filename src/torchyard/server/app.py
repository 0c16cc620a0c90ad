"""The ASGI app: a JSON API under ``/api/v1`` (documented at ``/api/v1/openapi.json``) and the pages.

Every route is declared with :func:`endpoint` (``server/routing.py``), which records its permission
(``read``, ``write``, ``admin``; ``public`` for the login page only); the app refuses to build if one
has none, and serves each behind :func:`_guard` (the caller's token scope and role against the
permission; the experiment rule where a run is looked up). ``torchyard ui`` acts as one local admin;
``torchyard server`` has users (``server/auth.py``). Reads go through the same Workspace, Store and SDK
objects scripts use.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from torchyard.errors import NotFoundError, SpecError, TorchyardError
from torchyard.server.routing import (  # noqa: F401 - re-exported: route modules declare with these
    ADMIN,
    ENDPOINTS,
    PERMISSIONS,
    PUBLIC,
    READ,
    WRITE,
    Context,
    Endpoint,
    _ctx,
    _float,
    _int,
    _is_sweep,
    _json,
    _public,
    _run_row,
    _sdk_run,
    _visible,
    endpoint,
    json_text,
)
from torchyard.server.security import CSP, MAX_BODY, SecurityMiddleware, safe_path
from torchyard.server.wire import CancelRun, body_schemas, check_query, decode, parsed
from torchyard.status import ACTIVE_VALUES, TERMINAL_VALUES

STATIC = os.path.join(os.path.dirname(__file__), "static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
LOG_CHUNK = 64 * 1024
POLL_S = 0.25


def _summaries(ctx: Context, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rank 0's metric summary of each run; a finished run without one (ingested before the summary
    existed) gets it rebuilt from its packed series, once."""
    from sqlalchemy import select  # noqa: PLC0415

    from torchyard.workspace.schema import metric_chunks  # noqa: PLC0415
    from torchyard.workspace.summary import get_summaries, rebuild_summary  # noqa: PLC0415

    ids = [r["id"] for r in rows]
    out = get_summaries(ctx.engine, ids)
    missing = [r["id"] for r in rows if not out[r["id"]] and r["status"] in TERMINAL_VALUES]
    if missing:
        with ctx.engine.connect() as conn:
            have = {rid for (rid,) in conn.execute(
                select(metric_chunks.c.run_id).where(metric_chunks.c.run_id.in_(missing), metric_chunks.c.rank == 0)
                .distinct()
            )}
        from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

        for rid in have:
            try:
                rebuild_summary(ctx.store.engine, rid)
            except SQLAlchemyError:  # another request rebuilt it at the same moment
                pass
        if have:
            out.update(get_summaries(ctx.engine, sorted(have)))
    return out


def _logs_dir(ctx: Context, row: dict[str, Any]) -> str:
    live = os.path.join(row["run_dir"], "logs")
    if os.path.isdir(live):
        return live
    return os.path.join(ctx.workspace.artifacts_dir(row["id"]), "logs")


_RANK_RE = re.compile(r"^rank_(\d+)\.txt$")


# ---- API: runs ------------------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/openapi.json", permission=READ)
def openapi(request: Request) -> Response:
    """This API's OpenAPI 3.1 description."""
    return _json(openapi_document())


@endpoint("GET", "/api/v1/experiments", permission=READ)
def list_experiments(request: Request) -> Response:
    """The workspace's experiments."""
    ctx = _ctx(request)
    names = ctx.store.list_experiments()
    visible = _visible(ctx)
    return _json({"experiments": names if visible is None else [n for n in names if n in set(visible)]})


@endpoint("GET", "/api/v1/runs", permission=READ, params=(
    ("experiment", "string", "only this experiment's runs"),
    ("status", "string", "comma-separated statuses"),
    ("tag", "array", "KEY or KEY=VALUE; repeat for several"),
    ("parent", "string", "only the children of this run"),
    ("top_level", "boolean", "only runs without a parent (default: true unless parent is given)"),
    ("q", "string", "run id or display name contains"),
    ("metric", "string", "only runs that logged this scalar (rank 0)"),
    ("metric_min", "number", "... whose last value is at least this"),
    ("metric_max", "number", "... whose last value is at most this"),
    ("sort", "string", "created_at, started_at, ended_at, status, experiment, name, id or metric:NAME"),
    ("order", "string", "desc (default) or asc"),
    ("limit", "integer", "runs per page, 1-500 (default 50)"),
    ("cursor", "string", "next_cursor of the previous page"),
))
def list_runs(request: Request) -> Response:
    """A page of runs, filtered and sorted, with keyset pagination and each run's metric summary."""
    from torchyard.workspace.browse import get_tags_for, list_runs_page  # noqa: PLC0415

    ctx = _ctx(request)
    qp = request.query_params
    tags: dict[str, str | None] = {}
    for item in qp.getlist("tag"):
        key, sep, value = item.partition("=")
        if not key:
            raise SpecError("tag", f"must be KEY or KEY=VALUE, got {item!r}")
        tags[key] = value if sep else None
    order = qp.get("order", "desc")
    if order not in ("asc", "desc"):
        raise SpecError("order", f"must be asc or desc, got {order!r}")
    parent = qp.get("parent") or None
    top_level = qp.get("top_level", "1" if parent is None else "0") not in ("0", "false", "no")
    status = [s for s in qp.get("status", "").split(",") if s]
    lo, hi = _float(request, "metric_min"), _float(request, "metric_max")
    if (lo is not None or hi is not None) and not qp.get("metric"):
        raise SpecError("metric", "metric_min/metric_max need metric=NAME")
    metric = (qp["metric"], lo, hi) if qp.get("metric") else None
    rows, next_cursor = list_runs_page(
        ctx.engine, experiment=qp.get("experiment") or None, status=status, tags=tags, parent_id=parent,
        top_level=top_level, search=qp.get("q") or None, metric=metric, sort=qp.get("sort", "created_at"),
        descending=order == "desc", limit=_int(request, "limit", 50, 1, 500) or 50, cursor=qp.get("cursor") or None,
        experiments=_visible(ctx),
    )
    ids = [r["id"] for r in rows]
    tag_map = get_tags_for(ctx.engine, ids)
    summaries = _summaries(ctx, rows)
    out = [{**_public(r), "tags": tag_map[r["id"]], "metrics": summaries[r["id"]]} for r in rows]
    return _json({"runs": out, "next_cursor": next_cursor})


@endpoint("GET", "/api/v1/runs/{run_id}", permission=READ)
def get_run(request: Request) -> Response:
    """A run: details, status history, tags, properties, error, metric keys and summary."""
    from torchyard.runtime.summary import shape_metrics  # noqa: PLC0415
    from torchyard.workspace.browse import metric_keys  # noqa: PLC0415

    ctx = _ctx(request)
    run = _sdk_run(ctx, request.path_params["run_id"])
    details = run.get_details()
    row = run._row
    details.pop("logFiles", None)
    other = shape_metrics(ctx.store.get_metric_rows(run.id, rank=0))
    out = {
        "run": {**_public(row), "is_sweep": _is_sweep(row)},
        "details": details,
        "metric_keys": metric_keys(ctx.engine, run.id),
        "summary": _summaries(ctx, [row])[run.id],
        "other_metrics": other,
        "can_edit": api_system.can_edit(ctx, row["experiment"]),
    }
    return _json(out)


@endpoint("GET", "/api/v1/runs/{run_id}/metrics", permission=READ, params=(
    ("charts_width", "integer", "also the first charts' buckets (rank 0, step axis), laid out in this many pixels"),
))
def list_metrics(request: Request) -> Response:
    """A run's scalar series: name, rank, value count and newest chunk id. With ``charts_width``,
    also ``charts``: the buckets of the first rank-0 series, sized for the run page's grid in that
    width, as ``GET .../metrics/NAME`` answers them (a run page's first paint in one round trip)."""
    from torchyard.server.buckets import FIRST_CHARTS, chart_points, reduce_series, sorted_axis, to_json  # noqa: PLC0415
    from torchyard.workspace.browse import metric_keys  # noqa: PLC0415

    ctx = _ctx(request)
    row = _run_row(ctx, request.path_params["run_id"])
    keys = metric_keys(ctx.engine, row["id"])
    width = _int(request, "charts_width", None, 100, 20000)
    if width is None:
        return _json({"metrics": keys})
    # the run page's Metrics tab: the script's own series (the System tab asks for system/... ones)
    names = [k["name"] for k in keys if k["rank"] == 0 and not k["name"].startswith("system/")][:FIRST_CHARTS]
    points = chart_points(width, len(names))
    parts = []
    for name in names:
        series = ctx.cache.get(ctx.engine, row["id"], 0, name)
        if not len(series.vals):
            continue
        xs, vals = sorted_axis(series, "step")
        head = {"run_id": row["id"], "name": name, "rank": 0, "x_axis": "step", "last_chunk": series.last_chunk}
        parts.append(json.dumps(name).encode() + b":" + to_json({**head, **reduce_series(xs, vals, None, None, points)},
                                                                integer_x=True))
    body = (b'{"metrics":' + json.dumps(keys).encode() + b',"points":' + str(points).encode()
            + b',"charts":{' + b",".join(parts) + b"}}")
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


@endpoint("GET", "/api/v1/runs/{run_id}/metrics/{name:path}", permission=READ, params=(
    ("rank", "integer", "the rank whose series (default 0)"),
    ("x", "string", "step (default) or time"),
    ("from", "number", "lowest x (default: the series' first)"),
    ("to", "number", "highest x (default: the series' last)"),
    ("points", "integer", "buckets wanted, 1-20000 (default 1000): about the chart's width in pixels"),
))
def get_metric(request: Request) -> Response:
    """A scalar series reduced to min/max/first/last per x bucket (raw points when few enough)."""
    from torchyard.server.buckets import reduce_series, sorted_axis, to_json  # noqa: PLC0415

    ctx = _ctx(request)
    row = _run_row(ctx, request.path_params["run_id"])
    name = request.path_params["name"]
    rank = _int(request, "rank", 0, 0, 1 << 20) or 0
    x = request.query_params.get("x", "step")
    if x not in ("step", "time"):
        raise SpecError("x", f"must be step or time, got {x!r}")
    points = _int(request, "points", 1000, 1, 20000) or 1000
    series = ctx.cache.get(ctx.engine, row["id"], rank, name)
    if not len(series.vals):
        raise NotFoundError(f"run {row['id']} has no scalar metric {name!r} on rank {rank}")
    xs, vals = sorted_axis(series, x)
    reduced = reduce_series(xs, vals, _float(request, "from"), _float(request, "to"), points)
    head = {"run_id": row["id"], "name": name, "rank": rank, "x_axis": x, "last_chunk": series.last_chunk}
    body = to_json({**head, **reduced}, integer_x=x == "step")
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


# ---- API: logs ------------------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/runs/{run_id}/logs", permission=READ)
def list_logs(request: Request) -> Response:
    """A run's log files (one per rank, plus the run's own), with their sizes."""
    ctx = _ctx(request)
    row = _run_row(ctx, request.path_params["run_id"])
    folder = _logs_dir(ctx, row)
    files = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_file(follow_symlinks=False):
            m = _RANK_RE.match(entry.name)
            files.append({"name": entry.name, "size": entry.stat().st_size, "rank": int(m.group(1)) if m else None})
    files.sort(key=lambda f: (f["rank"] is None, f["rank"] or 0, f["name"]))
    return _json({"logs": files})


def _read_log(path: str, offset: int | None, limit: int, tail: int | None) -> dict[str, Any]:
    try:
        size = os.path.getsize(path)
    except OSError:
        return {"size": 0, "offset": 0, "next_offset": 0, "text": ""}
    start = max(0, size - tail) if tail is not None else min(offset or 0, size)
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(limit)
    if tail is not None and start > 0:  # begin at a line start
        cut = data.find(b"\n")
        if cut >= 0:
            start += cut + 1
            data = data[cut + 1:]
    end = start + len(data)
    if end < size:  # never split a UTF-8 character: stop after the last complete line if there is one
        cut = data.rfind(b"\n")
        if cut >= 0:
            data = data[: cut + 1]
            end = start + len(data)
    return {"size": size, "offset": start, "next_offset": end, "text": data.decode("utf-8", "replace")}


def _log_path(ctx: Context, row: dict[str, Any], rank: int) -> str:
    folder = _logs_dir(ctx, row)
    return os.path.join(folder, f"rank_{rank}.txt")


@endpoint("GET", "/api/v1/runs/{run_id}/logs/{rank:int}", permission=READ, params=(
    ("offset", "integer", "first byte to read (default 0)"),
    ("limit", "integer", "most bytes to return, 1-1048576 (default 65536)"),
    ("tail", "integer", "read the last N bytes instead (starting at a line)"),
    ("follow", "boolean", "stream new text as Server-Sent Events ('log' events) from offset on"),
))
async def read_log(request: Request) -> Response:
    """A byte range of one rank's log (text, offsets, size), or its live tail as an SSE stream."""
    ctx = _ctx(request)
    row = await asyncio.to_thread(_run_row, ctx, request.path_params["run_id"])
    rank = int(request.path_params["rank"])
    path = _log_path(ctx, row, rank)
    offset = _int(request, "offset", 0, 0, 1 << 62)
    if request.query_params.get("follow") in ("1", "true", "yes"):
        return _sse(request, _log_events(request, ctx, row["id"], path, rank, offset or 0))
    limit = _int(request, "limit", LOG_CHUNK, 1, 1 << 20) or LOG_CHUNK
    tail = _int(request, "tail", None, 1, 1 << 20)
    if not os.path.exists(path) and rank != 0:
        raise NotFoundError(f"run {row['id']} has no log for rank {rank}")
    result = await asyncio.to_thread(_read_log, path, offset, limit, tail)
    return _json({"rank": rank, **result})


# ---- API: files ------------------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/runs/{run_id}/artifacts", permission=READ)
def list_artifacts(request: Request) -> Response:
    """A run's artifacts (outputs/, logs/ and uploads, collected at Finalizing), with sizes."""
    ctx = _ctx(request)
    run = _sdk_run(ctx, request.path_params["run_id"])
    root = ctx.workspace.artifacts_dir(run.id)
    files = []
    for name in run.get_file_names():
        try:
            size: int | None = os.path.getsize(os.path.join(root, name))
        except OSError:
            size = None
        files.append({"name": name, "size": size})
    return _json({"artifacts": files})


@endpoint("GET", "/api/v1/runs/{run_id}/artifacts/{path:path}", permission=READ)
def download_artifact(request: Request) -> Response:
    """Download one artifact (always as an attachment)."""
    ctx = _ctx(request)
    run = _sdk_run(ctx, request.path_params["run_id"])
    rel = request.path_params["path"]
    root = ctx.workspace.artifacts_dir(run.id)
    filename = os.path.basename(rel) or "artifact"
    if run._remote() is None:
        real = safe_path(root, rel)
        if not os.path.isfile(real):
            raise NotFoundError(f"run {run.id} has no file {rel!r}")
        return FileResponse(real, media_type="application/octet-stream", filename=filename,
                            content_disposition_type="attachment")
    if rel not in run.get_file_names():
        raise NotFoundError(f"run {run.id} has no file {rel!r}")
    tmp = tempfile.mkdtemp(prefix="torchyard-ui-")
    dest = run.download_file(rel, os.path.join(tmp, "file"))
    return FileResponse(dest, media_type="application/octet-stream", filename=filename,
                        content_disposition_type="attachment",
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


def _snapshot(ctx: Context, run_id: str) -> Any:
    snap_id = ctx.store.get_properties(run_id).get("torchyard.snapshot")
    if not snap_id:
        raise NotFoundError(f"run {run_id} has no recorded snapshot")
    return ctx.workspace.snapshots, ctx.workspace.snapshots.load(snap_id)


@endpoint("GET", "/api/v1/runs/{run_id}/snapshot", permission=READ)
def list_snapshot(request: Request) -> Response:
    """The files of the exact code the run executed (its snapshot), with sizes."""
    ctx = _ctx(request)
    row = _run_row(ctx, request.path_params["run_id"])
    _store, snap = _snapshot(ctx, row["id"])
    return _json({"snapshot": snap.manifest_id,
                  "files": [{"path": f.path, "size": f.size, "executable": f.executable} for f in snap.files]})


@endpoint("GET", "/api/v1/runs/{run_id}/snapshot/{path:path}", permission=READ)
def read_snapshot_file(request: Request) -> Response:
    """One file of the run's snapshot, as an attachment (the page shows it as text)."""
    ctx = _ctx(request)
    row = _run_row(ctx, request.path_params["run_id"])
    store, snap = _snapshot(ctx, row["id"])
    rel = request.path_params["path"]
    found = next((f for f in snap.files if f.path == rel), None)
    if found is None:
        raise NotFoundError(f"the snapshot of run {row['id']} has no file {rel!r}")
    return FileResponse(store.object_path(found.sha256), media_type="application/octet-stream",
                        filename=os.path.basename(rel), content_disposition_type="attachment")


# ---- API: sweeps and control -------------------------------------------------------------------------------


def _children(ctx: Context, run_id: str) -> tuple[Any, list[dict[str, Any]]]:
    run = _sdk_run(ctx, run_id)
    if not hasattr(run, "get_children_sorted_by_primary_metric"):
        raise NotFoundError(f"run {run_id!r} is not a sweep (HyperDrive) run")
    ranked = run.get_children_sorted_by_primary_metric()
    for position, child in enumerate(ranked, 1):
        child["rank"] = position if child["best_primary_metric"] is not None else None
        reason = ctx.store.cancel_reason(child["run_id"]) if child["status"] == "Canceled" else None
        child["early_terminated"] = bool(reason and reason.startswith("early terminated by "))
        child["cancel_reason"] = reason
    return run, ranked


@endpoint("GET", "/api/v1/runs/{run_id}/children", permission=READ)
def sweep_children(request: Request) -> Response:
    """A sweep's trials, best first: hyperparameters, best primary metric, status, early termination."""
    run, ranked = _children(_ctx(request), request.path_params["run_id"])
    params = sorted({k for c in ranked for k in c["hyperparameters"]})
    return _json({"run_id": run.id, "primary_metric": run.get_primary_metric_config(), "parameters": params,
                  "children": ranked})


@endpoint("GET", "/api/v1/runs/{run_id}/children/metric", permission=READ, params=(
    ("points", "integer", "buckets per trial, 1-5000 (default 300)"),
))
def sweep_children_metric(request: Request) -> Response:
    """Every trial's primary metric over steps, reduced (for the sweep page's overlay chart)."""
    from torchyard.server.buckets import reduce_series, sorted_axis  # noqa: PLC0415

    ctx = _ctx(request)
    run, ranked = _children(ctx, request.path_params["run_id"])
    points = _int(request, "points", 300, 1, 5000) or 300
    name = run.primary_metric_name
    out = {}
    for child in ranked:
        series = ctx.cache.get(ctx.engine, child["run_id"], 0, name)
        if len(series.vals):
            reduced = reduce_series(*sorted_axis(series, "step"), None, None, points)
            out[child["run_id"]] = {
                "x": reduced["x"].tolist(),
                "y": [None if v != v else v for v in (reduced["y"] if reduced["mode"] == "raw" else reduced["last"]).tolist()],
            }
    return _json({"metric": name, "series": out})


@endpoint("POST", "/api/v1/runs/{run_id}/cancel", permission=WRITE, body=CancelRun)
async def cancel_run(request: Request) -> Response:
    """Cancel a run (a sweep: and every trial still going). Body: optional {"reason": "..."}. Idempotent."""
    ctx = _ctx(request)
    reason = parsed(request, CancelRun).reason
    if reason is not None and len(reason) > 1000:
        raise SpecError("reason", "must be a string of at most 1000 characters")

    def work() -> str:
        run = _sdk_run(ctx, request.path_params["run_id"])
        run.cancel(reason)
        from torchyard.server.auth import current  # noqa: PLC0415

        ctx.auth.audit(current()[0].user, "run.cancel", run.id, experiment=run._row["experiment"], reason=reason)
        return str(ctx.store.get_status(run.id))

    status = await asyncio.to_thread(work)
    return _json({"run_id": request.path_params["run_id"], "status": status})


# ---- live: Server-Sent Events ---------------------------------------------------------------------------------


def _sse(request: Request, events: AsyncIterator[tuple[str, Any]]) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async for name, data in events:
            if name == "":
                yield b": keep-alive\n\n"
            else:
                yield f"event: {name}\ndata: {json_text(data)}\n\n".encode()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


def _finite(values: Any) -> list[Any]:
    return [None if v != v or v in (float("inf"), float("-inf")) else v for v in values]


async def _log_events(request: Request, ctx: Context, run_id: str, path: str, rank: int,
                      offset: int) -> AsyncIterator[tuple[str, Any]]:
    idle = 0.0
    while not await request.is_disconnected():
        chunk = await asyncio.to_thread(_read_log, path, offset, LOG_CHUNK, None)
        if chunk["next_offset"] > offset:
            offset = chunk["next_offset"]
            idle = 0.0
            yield "log", {"rank": rank, **chunk}
            continue
        status = await asyncio.to_thread(ctx.store.get_status, run_id)
        if status in TERMINAL_VALUES:
            yield "end", {"status": status}
            return
        idle += POLL_S
        if idle >= 15:
            idle = 0.0
            yield "", None
        await asyncio.sleep(POLL_S)


@endpoint("GET", "/api/v1/runs/{run_id}/events", permission=READ, params=(
    ("after", "integer", "newest metric chunk id the page has (points after it are sent)"),
    ("log_rank", "integer", "also stream this rank's log"),
    ("log_offset", "integer", "byte offset the page has of that log"),
))
async def run_events(request: Request) -> Response:
    """One SSE stream for a run page: 'status', 'points' (new metric values) and 'log' events; 'end'."""
    from torchyard.workspace.browse import latest_chunk_id, read_chunks  # noqa: PLC0415

    ctx = _ctx(request)
    row = await asyncio.to_thread(_run_row, ctx, request.path_params["run_id"])
    run_id = row["id"]
    given = _int(request, "after", None, 0, 1 << 62)
    after: int = given if given is not None else await asyncio.to_thread(latest_chunk_id, ctx.engine, run_id)
    log_rank = _int(request, "log_rank", None, 0, 1 << 20)
    log_offset = _int(request, "log_offset", 0, 0, 1 << 62) or 0
    log_path = _log_path(ctx, row, log_rank) if log_rank is not None else None

    async def events() -> AsyncIterator[tuple[str, Any]]:
        nonlocal after, log_offset
        status = None
        quiet = 0.0
        ended_polls = 0
        while not await request.is_disconnected():
            sent = False
            current = await asyncio.to_thread(_run_row, ctx, run_id)
            if current["status"] != status:
                status = current["status"]
                yield "status", _public(current)
                sent = True
            chunks = await asyncio.to_thread(read_chunks, ctx.engine, run_id, after_id=after)
            for cid, rank, name, vals, steps, ts in chunks:
                import numpy as np  # noqa: PLC0415

                v = np.frombuffer(vals, dtype=np.float64)
                data: dict[str, Any] = {"chunk": cid, "rank": rank, "name": name, "count": int(len(v))}
                if len(v) <= 5000:
                    data["vals"] = _finite(v.tolist())
                    data["steps"] = np.frombuffer(steps, dtype=np.int64).tolist()
                    data["ts"] = np.frombuffer(ts, dtype=np.float64).tolist()
                after = cid
                yield "points", data
                sent = True
            if log_path is not None:
                chunk = await asyncio.to_thread(_read_log, log_path, log_offset, LOG_CHUNK, None)
                if chunk["next_offset"] > log_offset:
                    log_offset = chunk["next_offset"]
                    yield "log", {"rank": log_rank, **chunk}
                    sent = True
            if status in TERMINAL_VALUES:
                ended_polls += 1
                if ended_polls > 2:
                    yield "end", {"status": status}
                    return
            quiet = 0.0 if sent else quiet + POLL_S
            if quiet >= 15:
                quiet = 0.0
                yield "", None
            await asyncio.sleep(POLL_S)

    return _sse(request, events())


@endpoint("GET", "/api/v1/events", permission=READ)
async def runs_events(request: Request) -> Response:
    """One SSE stream for the runs table: 'status' of runs that change, 'runs' when runs are added."""
    from sqlalchemy import func, select  # noqa: PLC0415

    from torchyard.workspace.browse import status_changes  # noqa: PLC0415
    from torchyard.workspace.schema import runs  # noqa: PLC0415

    ctx = _ctx(request)
    visible = await asyncio.to_thread(_visible, ctx)

    def count() -> int:
        query = select(func.count()).select_from(runs)
        if visible is not None:
            query = query.where(runs.c.experiment.in_(visible))
        with ctx.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    async def events() -> AsyncIterator[tuple[str, Any]]:
        known: dict[str, str] = {}
        since = time.time()
        total = await asyncio.to_thread(count)
        quiet = 0.0
        while not await request.is_disconnected():
            sent = False
            changes = await asyncio.to_thread(status_changes, ctx.engine, since - 5, sorted(ACTIVE_VALUES), visible)
            for change in changes:
                if known.get(change["id"]) != change["status"]:
                    known[change["id"]] = change["status"]
                    yield "status", change
                    sent = True
            now_total = await asyncio.to_thread(count)
            if now_total != total:
                total = now_total
                yield "runs", {"count": total}
                sent = True
            quiet = 0.0 if sent else quiet + 0.5
            if quiet >= 15:
                quiet = 0.0
                yield "", None
            await asyncio.sleep(0.5)

    return _sse(request, events())


# ---- pages --------------------------------------------------------------------------------------------------


_STATIC_CACHE: dict[str, tuple[bytes, str]] = {}


def _static(name: str) -> Response:
    """A file of the dashboard's own (small) static folder, read once and served from memory with an
    ETag, so a page load costs no file system work or thread hop."""
    found = _STATIC_CACHE.get(name)
    if found is None:
        ext = os.path.splitext(name)[1]
        if ext not in STATIC_TYPES or name not in os.listdir(STATIC):
            raise NotFoundError(f"no static file {name!r}")
        with open(os.path.join(STATIC, name), "rb") as fh:
            data = fh.read()
        import hashlib  # noqa: PLC0415

        found = _STATIC_CACHE[name] = (data, hashlib.sha256(data).hexdigest()[:16])
    data, etag = found
    return Response(data, media_type=STATIC_TYPES[os.path.splitext(name)[1]],
                    headers={"cache-control": "no-cache", "etag": f'"{etag}"'})


_SHELL: dict[str, Any] = {}
_INLINE_TAG = re.compile(r'<script src="/static/([\w.-]+\.js)"[^>]*></script>|<link rel="stylesheet" href="/static/([\w.-]+\.css)">')


def _shell() -> Response:
    """The dashboard's one HTML shell with its own scripts and style sheet inlined (built once): a
    page costs one request before its API calls, not five, and a headless Chromium on a small
    machine spends ~50 ms less before the first chart. The CSP stays strict: it names each inline
    block by its sha256 (no ``unsafe-inline``). The files stay served under /static too."""
    if not _SHELL:
        import base64  # noqa: PLC0415
        import hashlib  # noqa: PLC0415

        with open(os.path.join(STATIC, "index.html"), encoding="utf-8") as fh:
            html = fh.read()
        hashes: dict[str, str] = {"script": "", "style": ""}
        tail: list[str] = []
        deferred_files: list[str] = []

        def inline(match: re.Match[str]) -> str:
            name, kind = (match.group(1), "script") if match.group(1) else (match.group(2), "style")
            deferred = " defer" in match.group(0)
            with open(os.path.join(STATIC, name), encoding="utf-8") as fh:
                text = fh.read()
            # text that could end the block early (or keep it open) stays a file, and so does every
            # deferred script after a deferred one left as a file (they run in document order)
            if f"</{kind}" in text.lower() or "<!--" in text or (deferred and deferred_files):
                if deferred:
                    deferred_files.append(name)
                return match.group(0)
            hashes[kind] += f" 'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"
            block = f"<{kind}>{text}</{kind}>"
            if deferred:  # a deferred script runs once the body is parsed: put it at the body's end
                tail.append(block)
                return ""
            return block

        head, end, rest = _INLINE_TAG.sub(inline, html).rpartition("</body>")
        body = (head + "".join(tail) + end + rest).encode() if end else (rest + "".join(tail)).encode()
        csp = CSP.replace("script-src 'self'", "script-src 'self'" + hashes["script"])
        _SHELL.update(body=body, headers={
            "cache-control": "no-cache", "etag": f'"{hashlib.sha256(body).hexdigest()[:16]}"',
            "content-security-policy": csp.replace("style-src 'self'", "style-src 'self'" + hashes["style"])})
    return Response(_SHELL["body"], media_type="text/html", headers=_SHELL["headers"])


def _page_handler(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        """A dashboard page (one HTML shell, its scripts inlined; they read the API)."""
        return _shell()

    page.__name__ = page.__qualname__ = f"page_{name}"
    return page


for _name, _path in (("runs", "/"), ("run", "/runs/{run_id}"), ("compare", "/compare"), ("sweep", "/sweeps/{run_id}")):
    endpoint("GET", _path, permission=READ)(_page_handler(_name))


@endpoint("GET", "/login", permission=PUBLIC)
async def login_page(request: Request) -> Response:
    """The team server's login form."""
    return _static("login.html")


@endpoint("GET", "/static/{name}", permission=PUBLIC)
async def static_file(request: Request) -> Response:
    """The dashboard's own script, style sheet and images (written for torchyard; no third-party code)."""
    return _static(request.path_params["name"])


# ---- errors, OpenAPI, the app ---------------------------------------------------------------------------------


def _error(request: Request, exc: Exception) -> Response:
    from torchyard.server.auth import Forbidden, Unauthorized  # noqa: PLC0415

    body: dict[str, Any]
    if isinstance(exc, Unauthorized):
        status, body = 401, {"message": str(exc)}
    elif isinstance(exc, Forbidden):
        status, body = 403, {"message": str(exc)}
    elif isinstance(exc, NotFoundError):
        status, body = 404, {"message": str(exc)}
    elif isinstance(exc, SpecError):
        status, body = 400, {"field": getattr(exc, "field", None), "message": str(exc)}
    else:
        status, body = 409, {"message": str(exc)}
    return JSONResponse({"error": {"status": status, **body}}, status_code=status)


_UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
_ERROR_REF = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["status", "message"], "properties": {
        "status": {"type": "integer"}, "message": {"type": "string"},
        "field": {"type": ["string", "null"], "description": "the request field or parameter at fault (400)"}}}},
}


def _responses(ep: Endpoint) -> dict[str, Any]:
    """The status codes ``ep`` answers: its success, and the errors the guard, the security
    middleware (``server/security.py``) and ``_error`` give it."""
    unsafe = ep.method in _UNSAFE
    found: dict[str, str] = {str(ep.status): "created" if ep.status == 201 else "OK"}
    if ep.body is not None or ep.raw_body is not None or ep.params or "{" in ep.path or unsafe:
        found["400"] = "a request field, parameter or body is invalid (the error names it)"
    if ep.permission != PUBLIC:
        found["401"] = "authentication needed: a bearer token or a session cookie"
    elif ep.method == "POST":
        found["401"] = "wrong user name or password"
    if unsafe or ep.permission not in (READ, PUBLIC):
        found["403"] = "the caller's role or token scope does not allow this, or a cross-origin request"
    if "{" in ep.path or ep.body is not None:
        found["404"] = "not found (or not visible to the caller)"
    if unsafe:
        found["409"] = "the request conflicts with the current state"
        found["413"] = "the request body is over its limit"
        found["415"] = f"the request body is not {ep.raw_body or 'application/json'}"
    if ep.path == "/api/v1/login":
        found["429"] = "too many failed logins; Retry-After says when to try again"
    return {code: ({"description": text} if code < "400" else {"description": text, **_ERROR_REF})
            for code, text in sorted(found.items())}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description, built from the declared endpoints (each carries ``x-permission``):
    each operation's parameters, request body (its ``server/wire.py`` Struct), the status codes it
    answers, and the bearer-token and session-cookie security schemes."""
    paths: dict[str, dict[str, Any]] = {}
    api = [ep for ep in ENDPOINTS if ep.path.startswith("/api/")]
    models = sorted({ep.body for ep in api if ep.body is not None}, key=lambda m: m.__name__)
    refs, components = body_schemas(models)
    ref_of = dict(zip(models, refs, strict=True))
    for ep in api:
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", ep.path)
        params: list[dict[str, Any]] = [
            {"name": n, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 0} if conv == ":int" else {"type": "string", "minLength": 1}}
            for n, conv in re.findall(r"\{(\w+)(:\w+)?\}", ep.path)
        ]
        for n, t, d in ep.params:
            schema: dict[str, Any] = ({"type": "array", "items": {"type": "string"}} if t == "array"
                                      else {"type": t})
            params.append({"name": n, "in": "query", "required": False, "schema": schema, "description": d,
                           **({"style": "form", "explode": True} if t == "array" else {})})
        op: dict[str, Any] = {"summary": ep.summary, "operationId": ep.func.__name__, "parameters": params,
                              "x-permission": ep.permission, "responses": _responses(ep)}
        if ep.permission == PUBLIC:
            op["security"] = []
        if ep.body is not None:
            required = ep.method == "PUT" or bool(components[ep.body.__name__].get("required"))
            op["requestBody"] = {"required": required, "content": {"application/json": {"schema": ref_of[ep.body]}}}
        elif ep.raw_body is not None:
            op["requestBody"] = {"required": True,
                                 "content": {ep.raw_body: {"schema": {"type": "string", "format": "binary"}}}}
        paths.setdefault(path, {})[ep.method.lower()] = op
    from torchyard.server.auth import SESSION_COOKIE  # noqa: PLC0415

    return {
        "openapi": "3.1.0", "info": {"title": "torchyard dashboard API", "version": "1"}, "paths": paths,
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
        "components": {
            "schemas": {**components, "Error": _ERROR_SCHEMA},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "an API token (`torchyard login`, POST /api/v1/tokens)"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                                  "description": "the browser session POST /api/v1/login sets"},
            },
        },
    }


def _guard(ep: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """The route's handler behind its declared permission: the middleware's principal must exist and
    its token scope and role allow ``ep.permission``; a per-run token only reaches ``run_token`` routes.
    Fail closed: a route without a known permission never gets here (create_app refuses it)."""
    from torchyard.server.auth import CURRENT  # noqa: PLC0415

    func, permission = ep.func, ep.permission
    is_async = asyncio.iscoroutinefunction(func)
    run_token_ok = bool(getattr(func, "run_token", False))
    params, body_model = ep.params, ep.body

    async def guarded(request: Request) -> Response:
        if any("\x00" in str(v) for v in request.path_params.values()):  # never a name here; PostgreSQL refuses NUL
            return _error(request, NotFoundError("not found"))
        if permission != PUBLIC:
            principal = request.scope.get("torchyard.principal")
            if principal is None:
                if ep.method == "GET" and not ep.path.startswith("/api/") and getattr(
                        request.app.state.ctx.auth, "users", False):
                    from starlette.responses import RedirectResponse  # noqa: PLC0415

                    return RedirectResponse("/login", status_code=303)
                return _error(request, _unauthorized())
            if principal.run_id is not None and not run_token_ok:
                return _error(request, NotFoundError("not found"))
            if not principal.allows(permission):
                from torchyard.server.auth import Forbidden  # noqa: PLC0415

                return _error(request, Forbidden(
                    f"this needs {permission} access; {principal.user} ({principal.role}) "
                    f"with a {principal.scope}-scoped token does not have it"))
            CURRENT.set((principal, permission))
        if params:
            check_query(request.query_params, params)
        if body_model is not None:
            request.state.body = decode(await request.body(), body_model)
        if is_async:
            result: Response = await func(request)
        else:
            result = await asyncio.to_thread(func, request)
        return result

    guarded.__name__ = func.__name__
    guarded.permission = permission  # type: ignore[attr-defined]
    return guarded


def _unauthorized() -> Exception:
    from torchyard.server.auth import Unauthorized  # noqa: PLC0415

    return Unauthorized("authentication needed: send 'Authorization: Bearer TOKEN' (torchyard login) or log in")


class MethodsMiddleware:
    """``OPTIONS`` on a declared path: 204 with ``Allow`` naming every method the path has (its
    GET's HEAD, and OPTIONS); a 405 (a method the path lacks) names them all the same way, as JSON.

    No CORS: no ``Access-Control-*`` header is ever sent, so a cross-origin page's preflight still
    fails (the security middleware refuses cross-origin unsafe requests as well)."""

    def __init__(self, app: Any, *, routes: list[Route]) -> None:
        self.app = app
        self.routes = routes

    def allowed(self, scope: dict[str, Any]) -> list[str]:
        from starlette.routing import Match  # noqa: PLC0415

        methods: set[str] = set()
        for route in self.routes:
            if route.matches(scope)[0] != Match.NONE:
                methods.update(route.methods or ())
        return sorted(methods | {"OPTIONS"}) if methods else []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            allow = self.allowed(scope)
            if allow:
                await send({"type": "http.response.start", "status": 204,
                            "headers": [(b"allow", ", ".join(allow).encode()), (b"cache-control", b"no-store")]})
                await send({"type": "http.response.body", "body": b""})
                return
        replaced = False

        async def send_405_as_json(message: dict[str, Any]) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 405:
                replaced = True
                allow = ", ".join(self.allowed(scope))
                body = json.dumps({"error": {"status": 405, "message": f"{scope['method']} is not allowed here; "
                                                                      f"allowed: {allow}"}}).encode()
                await send({"type": "http.response.start", "status": 405, "headers": [
                    (b"allow", allow.encode()), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            if not replaced:
                await send(message)

        await self.app(scope, receive, send_405_as_json)


def create_app(workspace: Any, *, hosts: frozenset[str] | None, token: str | None = None,
               users: bool = False) -> Starlette:
    """The dashboard app for ``workspace`` (a ``Workspace``), answering only ``hosts`` (None: any).

    ``users=False`` (``torchyard ui``): everyone, or with ``token`` whoever carries it, is the local
    admin. ``users=True`` (``torchyard server``): users, hashed tokens, grants (``server.auth``)."""
    from torchyard.server.auth import LocalAuth, ServerAuth  # noqa: PLC0415

    routes: list[Route] = []
    for ep in ENDPOINTS:
        if getattr(ep.func, "permission", None) not in PERMISSIONS or ep.permission not in PERMISSIONS:
            raise RuntimeError(f"route {ep.method} {ep.path} declares no permission")
        routes.append(Route(ep.path, _guard(ep), methods=[ep.method], name=f"{ep.method} {ep.path}"))
    auth: Any = ServerAuth(workspace.store.engine) if users else LocalAuth(token)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityMiddleware, hosts=hosts, token=token, max_body=MAX_BODY, auth=auth),
            Middleware(GZipMiddleware, minimum_size=2048, compresslevel=4),  # level 9 cost ~40 ms per chart
            Middleware(MethodsMiddleware, routes=routes),
        ],
        exception_handlers={TorchyardError: _error},
    )
    app.state.ctx = Context(workspace=workspace, token=token is not None, auth=auth)
    return app


# the other route modules register themselves on import (with server/routing.py's helpers)
from torchyard.server import (  # noqa: E402, F401
    api_access,
    api_models,
    api_registrations,
    api_registry,
    api_remote,
    api_report,
    api_sweeps,
    api_system,
    api_transfers,
)
