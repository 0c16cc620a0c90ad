"""The run page's System tab and its Re-run button (issue #24, items 3 and 5).

``GET /api/v1/runs/ID/system``: every node's ``system/...`` series (the launchers' samples,
:mod:`torchyard.launch.sampler`: stored under the rank number of each node's first rank) in ONE
answer, each reduced on the time axis as ``GET .../metrics/NAME`` reduces a series, with a label per
node. The run page asks for it only when its System tab is opened (a zoomed chart asks again for
its own series with ``name``, ``from`` and ``to``); the Metrics tab leaves ``system/`` series out.

``POST /api/v1/runs/ID/rerun``: clone and re-run (:func:`torchyard.runtime.rerun.rerun`) with
optional ``set`` changes (``{"set": {"lr": 0.1, "node_count": 2}}``, as ``torchyard rerun --set``),
as the caller; it needs what submitting a run in that experiment needs (EDIT on it).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from torchyard.errors import NotFoundError, SpecError
from torchyard.server.routing import READ, WRITE, Context, _ctx, _float, _int, _json, _run_row, endpoint
from torchyard.server.wire import RerunRun, parsed

PREFIX = "system/"
#: the most changes one re-run takes, and the longest key and value
MAX_CHANGES, MAX_KEY, MAX_VALUE = 64, 128, 4096


def _system_cache(ctx: Context) -> Any:
    """The system series' own cache (a node's dozen series would push the Metrics tab's out of
    the shared one)."""
    found = getattr(ctx, "_system_cache", None)
    if found is None:
        from torchyard.server.buckets import SeriesCache  # noqa: PLC0415

        found = SeriesCache(size=64)
        ctx._system_cache = found  # type: ignore[attr-defined]
    return found


def _per_node(row: dict[str, Any]) -> int:
    """The run's processes per node (its spec's ``distribution``; 1 when it has none)."""
    try:
        spec = json.loads(row.get("spec") or "{}")
        value = int((spec.get("distribution") or {}).get("process_count_per_node") or 1)
    except (TypeError, ValueError, AttributeError):
        return 1
    return max(value, 1)


def _host(row: dict[str, Any], node: int) -> str | None:
    """Node K's host name where its launcher's heartbeat file says it (targets that keep one)."""
    from torchyard.paths import RunPaths  # noqa: PLC0415

    run_dir = row.get("run_dir")
    if not run_dir:
        return None
    try:
        with open(RunPaths(run_dir).heartbeat(node)) as fh:
            host = json.load(fh).get("host")
    except (OSError, ValueError, AttributeError):
        return None
    return str(host)[:255] if host else None


def nodes(row: dict[str, Any], ranks: list[int]) -> list[dict[str, Any]]:
    """A label for each node whose first rank is in ``ranks``: ``node K`` (and its host where known)."""
    per_node = _per_node(row)
    out = []
    for rank in sorted(set(ranks)):
        node = rank // per_node
        host = _host(row, node)
        out.append({"rank": rank, "node": node, "host": host, "label": f"node {node}" + (f" ({host})" if host else "")})
    return out


@endpoint("GET", "/api/v1/runs/{run_id}/system", permission=READ, params=(
    ("name", "array", "only these system/... series (default: every one)"),
    ("from", "number", "lowest time, in seconds since the epoch (default: the series' first)"),
    ("to", "number", "highest time (default: the series' last)"),
    ("points", "integer", "buckets per series, 1-20000 (default 600): about the chart's width in pixels"),
))
def system_metrics(request: Request) -> Response:
    """A run's system metrics: every node's ``system/...`` series on the time axis, reduced to
    min/max/first/last per bucket (as ``GET .../metrics/NAME``), and a label per node."""
    from torchyard.server.buckets import reduce_series, sorted_axis, to_json  # noqa: PLC0415
    from torchyard.workspace.browse import metric_keys  # noqa: PLC0415

    ctx = _ctx(request)
    row = _run_row(ctx, request.path_params["run_id"])
    wanted = set(request.query_params.getlist("name"))
    for name in wanted:
        if not name.startswith(PREFIX):
            raise SpecError("name", f"must name a system/... series, got {name[:200]!r}")
    points = _int(request, "points", 600, 1, 20000) or 600
    lo, hi = _float(request, "from"), _float(request, "to")
    keys = [k for k in metric_keys(ctx.engine, row["id"])
            if k["name"].startswith(PREFIX) and (not wanted or k["name"] in wanted)]
    cache = _system_cache(ctx)
    parts = []
    for key in keys:
        series = cache.get(ctx.engine, row["id"], key["rank"], key["name"])
        if not len(series.vals):
            continue
        xs, vals = sorted_axis(series, "time")
        head = {"name": key["name"], "rank": key["rank"], "last_chunk": series.last_chunk}
        parts.append(to_json({**head, **reduce_series(xs, vals, lo, hi, points)}, integer_x=False))
    labels = nodes(row, [k["rank"] for k in keys])
    body = (b'{"run_id":' + json.dumps(row["id"]).encode() + b',"x_axis":"time","points":' + str(points).encode()
            + b',"nodes":' + json.dumps(labels).encode() + b',"series":[' + b",".join(parts) + b"]}")
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


def _changes(given: dict[str, Any] | None) -> dict[str, str]:
    """The ``set`` changes as the strings ``torchyard rerun --set`` gives (a JSON true is ``true``)."""
    out: dict[str, str] = {}
    if not given:
        return out
    if len(given) > MAX_CHANGES:
        raise SpecError("set", f"takes at most {MAX_CHANGES} changes, got {len(given)}")
    for raw_key, value in given.items():
        key = raw_key.strip()
        if not key or len(key) > MAX_KEY or any(c in key for c in "=\n\r\x00"):
            raise SpecError("set", f"has a key that is not a setting or argument name: {raw_key[:MAX_KEY]!r}")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if len(text) > MAX_VALUE or "\x00" in text:
            raise SpecError(f"set.{key}", f"must be at most {MAX_VALUE} characters, without NUL")
        out[key] = text
    return out


def can_edit(ctx: Context, experiment: str) -> bool:
    """Whether the caller may change runs of ``experiment`` (cancel, re-run): the page shows the
    buttons only then."""
    from torchyard.server.auth import current  # noqa: PLC0415
    from torchyard.workspace.access import at_least  # noqa: PLC0415

    principal, _permission = current()
    if principal.run_id is not None or not principal.allows(WRITE):
        return False
    levels = ctx.auth.levels(principal, [experiment])
    return levels is None or at_least(levels.get(experiment), "EDIT")


@endpoint("POST", "/api/v1/runs/{run_id}/rerun", permission=WRITE, body=RerunRun, status=201)
async def rerun_run(request: Request) -> Response:
    """Clone and re-run a run: a new run of its experiment from the same code snapshot, environment
    and inputs, with optional ``set`` changes (job settings, or script arguments: ``lr`` sets
    ``--lr``). Needs EDIT on the experiment, as a submit does. The new run's id."""
    from torchyard.server.auth import current  # noqa: PLC0415

    ctx = _ctx(request)
    changes = _changes(parsed(request, RerunRun).set)
    principal, _ = current()

    def work() -> tuple[str, dict[str, Any]]:
        from torchyard.runtime.rerun import rerun  # noqa: PLC0415

        row = _run_row(ctx, request.path_params["run_id"], "EDIT")
        try:
            new_id = rerun(ctx.workspace, row["id"], changes, created_by=principal.user)
        except SpecError as err:
            field = str(getattr(err, "field", "") or "")
            if field in changes:
                raise SpecError(f"set.{field}", str(err).removeprefix(f"{field}: ")) from None
            raise
        except NotFoundError as err:  # the run was found: what is missing is something a setting names
            raise SpecError("set", str(err)) from None
        ctx.auth.audit(principal.user, "run.rerun", new_id, experiment=row["experiment"], rerun_of=row["id"],
                       changes=changes)
        return new_id, row

    new_id, row = await asyncio.to_thread(work)
    return _json({"run_id": new_id, "rerun_of": row["id"], "experiment": row["experiment"], "set": changes}, 201)
