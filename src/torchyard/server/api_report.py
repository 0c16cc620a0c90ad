"""In-job reporting through the team server: the mirror channel's frames over HTTP.

Nodes of a target that reach only the server (``ComputeTarget.reports_over_http``) run
``torchyard.compute.mirror_push``, which sends what :func:`torchyard.compute.mirror.scan` finds in
the node's run folder to ``PUT /api/v1/runs/RUN/mirror/NODE`` with the run's own token; the server
writes it into the run's folder with :func:`torchyard.compute.mirror.apply_at`, where the run's
supervisor (on this machine) ingests it like any other. ``GET`` says what the folder holds, so a
restarted pusher sends only the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from torchyard.errors import SpecError
from torchyard.server.routing import READ, WRITE, _ctx, _json, _run_row, endpoint


def _node(request: Request) -> int:
    node = int(request.path_params["node"])
    if not 0 <= node < 1 << 16:
        raise SpecError("node", "out of range")
    return node


@endpoint("GET", "/api/v1/runs/{run_id}/mirror/{node:int}", permission=READ)
def mirror_held(request: Request) -> Response:
    """What the run's folder holds of the mirrored files (bytes of each log, journal and exit file;
    the CRC-32 of node NODE's report): where node NODE's pusher resumes."""
    from torchyard.compute.mirror import held  # noqa: PLC0415

    row = _run_row(_ctx(request), request.path_params["run_id"])
    return _json({"offsets": held(row["run_dir"], _node(request))})


@endpoint("PUT", "/api/v1/runs/{run_id}/mirror/{node:int}", permission=WRITE, raw_body="application/octet-stream")
async def mirror_put(request: Request) -> Response:
    """One frame of node NODE (msgpack ``{relative path: [offset, bytes]}``, offset -1 for its whole
    report) written into the run's folder; only logs, metric journals, exit files and the node's own
    report may be written, and only while the run is active (409 after). Answers what the folder
    now holds of each path of the frame."""
    import msgspec  # noqa: PLC0415

    from torchyard.compute.mirror import apply_at  # noqa: PLC0415
    from torchyard.status import TERMINAL_VALUES  # noqa: PLC0415

    ctx = _ctx(request)
    node = _node(request)
    body = await request.body()
    try:
        changes = msgspec.msgpack.decode(body, type=dict[str, tuple[int, bytes]])
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise SpecError("body", f"must be a msgpack frame {{path: [offset, bytes]}} ({err})") from None

    def work() -> dict[str, Any]:
        row = _run_row(ctx, request.path_params["run_id"], "EDIT")
        if row["status"] in TERMINAL_VALUES:
            return {"ended": row["status"]}
        try:
            return {"offsets": apply_at(row["run_dir"], node, {k: list(v) for k, v in changes.items()})}
        except ValueError as err:
            raise SpecError("path", str(err)) from None

    result = await asyncio.to_thread(work)
    if "ended" in result:
        return _json({"error": {"status": 409, "message": f"the run has ended ({result['ended']})"}}, 409)
    return _json(result)


mirror_put.run_token = True  # type: ignore[attr-defined]  # a run's own token reaches these two
mirror_held.run_token = True  # type: ignore[attr-defined]
