"""Sweeps through the team server: a remote client's ``Experiment.submit(HyperDriveConfig(...))``.

The client uploads the trial's source folder as for a run (content-addressed, only what the server
lacks) and posts the sweep's definition (``HyperDriveConfig.to_dict``) with the snapshot's id; the
server rebuilds the config with the trial's ``source_directory`` pointing at the materialized
upload and starts the sweep through the runtime's ``start_sweep``, so the sweep controller runs
ON THE SERVER, exactly as for a local workspace. Starting (and resuming, cancelling) needs EDIT on
the experiment; reading the ranked trials needs READ. Cancel is the ordinary run cancel route
(``POST /api/v1/runs/ID/cancel``), which cancels a sweep's trials as well.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from torchyard.errors import NotFoundError, SpecError
from torchyard.server.api_remote import (
    _may_create,
    _sha,
    _str_map,
    materialize_upload,
)
from torchyard.server.auth import current
from torchyard.server.routing import READ, WRITE, _ctx, _int, _is_sweep, _json, _run_row, _sdk_run, endpoint
from torchyard.server.wire import StartSweep, parsed


def _sweep_run(ctx: Any, run_id: str, wanted: str | None = None) -> Any:
    """The caller's view of the sweep ``run_id`` (a HyperDriveRun), 404 when it is not one."""
    row = _run_row(ctx, run_id, wanted)
    if not _is_sweep(row):
        raise NotFoundError(f"run {run_id!r} is not a sweep (HyperDrive) run", run_id=run_id)
    return _sdk_run(ctx, run_id)


@endpoint("POST", "/api/v1/sweeps", permission=WRITE, body=StartSweep, status=201)
async def start_sweep(request: Request) -> Response:
    """Start a sweep: {"experiment", "sweep" (HyperDriveConfig.to_dict), "snapshot" (the trial's
    uploaded source), "tags", "client_source"}. The controller runs on the server; the parent's id."""
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    ctx = _ctx(request)
    body = parsed(request, StartSweep)
    experiment = check_name(body.experiment)
    snap = _sha(body.snapshot, "snapshot")
    tags = _str_map(body.tags, "tags")
    definition = body.sweep
    if not isinstance(definition.get("trial"), dict):
        raise SpecError("sweep", "must be a sweep definition (HyperDriveConfig.to_dict) with its trial job")
    principal, _ = current()

    def work() -> str:
        from torchyard.runtime.submit import start_sweep as start  # noqa: PLC0415
        from torchyard.spec.job import JobSpec  # noqa: PLC0415
        from torchyard.sweeps.config import HyperDriveConfig  # noqa: PLC0415

        _may_create(ctx, experiment)
        ws = ctx.workspace
        folder = materialize_upload(ws, snap)
        trial = {k: v for k, v in definition["trial"].items() if k in JobSpec.__struct_fields__}
        trial["source_directory"] = folder
        try:
            config = HyperDriveConfig.from_dict({**definition, "trial": trial})
        except (KeyError, TypeError, ValueError) as err:
            raise SpecError("sweep", f"is not a sweep definition ({type(err).__name__}: {err})") from None
        run_id = start(ws, experiment, config, tags, created_by=principal.user)
        client = body.client_source
        if client is not None and len(client) < 4096:
            ws.store.add_properties(run_id, {"torchyard.client_source_directory": client})
        return str(run_id)

    run_id = await asyncio.to_thread(work)
    return _json({"run_id": run_id, "experiment": experiment}, 201)


@endpoint("GET", "/api/v1/runs/{run_id}/sweep", permission=READ, params=(
    ("top", "integer", "only the N best trials (0: all)"),
    ("reverse", "boolean", "worst first"),
    ("discard_no_metric", "boolean", "leave out trials that logged no primary metric"),
))
def sweep_ranking(request: Request) -> Response:
    """A sweep's primary metric, its trials in start order with their hyperparameters, and the
    trials ranked by the primary metric (``HyperDriveRun.get_children_sorted_by_primary_metric``)."""
    ctx = _ctx(request)
    hd = _sweep_run(ctx, request.path_params["run_id"])
    qp = request.query_params

    def flag(name: str) -> bool:
        return qp.get(name, "0") not in ("0", "false", "no", "")

    ranked = hd.get_children_sorted_by_primary_metric(top=_int(request, "top", 0, 0, 1000) or 0,
                                                      reverse=flag("reverse"),
                                                      discard_no_metric=flag("discard_no_metric"))
    children = [r["id"] for r in hd._child_rows()]
    return _json({"run_id": hd.id, "primary_metric": hd.get_primary_metric_config(), "children": children,
                  "hyperparameters": hd.get_hyperparameters(), "ranked": ranked})


@endpoint("POST", "/api/v1/runs/{run_id}/sweep/resume", permission=WRITE)
async def resume_sweep(request: Request) -> Response:
    """Start a sweep's controller again on the server if it is not running (needs EDIT)."""
    ctx = _ctx(request)

    def work() -> bool:
        hd = _sweep_run(ctx, request.path_params["run_id"], "EDIT")
        return bool(hd.resume())

    return _json({"run_id": request.path_params["run_id"], "started": await asyncio.to_thread(work)})
