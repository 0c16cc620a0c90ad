"""How the API's routes are declared and what their handlers share (no route lives here).

:func:`endpoint` records each route with its permission (``read``, ``write``, ``admin``, or
``public`` for the login page only); :func:`torchyard.server.app.create_app` puts every recorded
route behind ``app._guard`` and refuses one without a known permission. The helpers look a run up
only through the caller's access (:func:`_run_row`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from torchyard.errors import NotFoundError, SpecError
from torchyard.limits import encode_non_finite
from torchyard.status import RunKind

READ, WRITE, ADMIN, PUBLIC = "read", "write", "admin", "public"
#: ``public`` is for the login page and its assets only; ``unit/test_server_routes.py`` pins that list
PERMISSIONS = (READ, WRITE, ADMIN, PUBLIC)


@dataclass(frozen=True)
class Endpoint:
    """One declared route: method, path, handler, permission, and its query parameters for OpenAPI."""

    method: str
    path: str
    func: Callable[..., Any]
    permission: str
    summary: str
    params: tuple[tuple[str, str, str], ...] = ()
    #: the JSON body's Struct (``server/wire.py``): the guard decodes it before the handler runs
    body: type[Any] | None = None
    #: a raw body's media type instead (uploads: ``application/octet-stream``), for OpenAPI
    raw_body: str | None = None
    #: the status of a success (201: the route creates something)
    status: int = 200


ENDPOINTS: list[Endpoint] = []


def endpoint(method: str, path: str, *, permission: str, params: tuple[tuple[str, str, str], ...] = (),
             body: type[Any] | None = None, raw_body: str | None = None,
             status: int = 200) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a route with its permission, query parameters ((name, type, description), ...; type
    ``array`` for a repeatable one), its JSON body's Struct or raw body's media type, and the status
    of its success."""
    if permission not in PERMISSIONS:
        raise ValueError(f"permission must be one of {PERMISSIONS}, not {permission!r}")

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        func.permission = permission  # type: ignore[attr-defined]
        summary = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else func.__name__
        ENDPOINTS.append(Endpoint(method, path, func, permission, summary, params, body, raw_body, status))
        return func

    return deco


@dataclass
class Context:
    """What the handlers share: the workspace, its store, and the series cache."""

    workspace: Any
    token: bool = False
    _cache: Any = None
    auth: Any = None

    @property
    def cache(self) -> Any:
        """The series cache (numpy is imported on the first chart, not at start-up)."""
        if self._cache is None:
            from torchyard.server.buckets import SeriesCache  # noqa: PLC0415

            self._cache = SeriesCache()
        return self._cache

    @property
    def store(self) -> Any:
        return self.workspace.store

    @property
    def engine(self) -> Any:
        return self.workspace.store.read_engine


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


# ---- small helpers ------------------------------------------------------------------------------------


def _int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(name, f"must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SpecError(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _float(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(name, f"must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SpecError(name, f"must be a finite number, got {raw!r}")
    return value


def _json(data: Any, status: int = 200) -> Response:
    return Response(json_text(data), status_code=status,
                    media_type="application/json", headers={"cache-control": "no-store"})


def json_text(data: Any) -> str:
    """Strict JSON of ``data``: a non-finite float (a diverged loss) becomes ``"Infinity"``,
    ``"-Infinity"`` or ``"NaN"`` (:mod:`torchyard.limits`), never an error or an invalid document."""
    try:
        return json.dumps(data, default=str, allow_nan=False)
    except ValueError:  # only non-finite floats make a default=str dump fail: rare, so walk only then
        return json.dumps(encode_non_finite(data), default=str, allow_nan=False)


def _run_row(ctx: Context, run_id: str, wanted: str | None = None) -> dict[str, Any]:
    """The run's row, if the caller may see its experiment (else the same 404 as a missing run) and
    has the level the route needs (else 403). A per-run token sees only its own run."""
    from torchyard.server.auth import current, require_experiment  # noqa: PLC0415

    row: dict[str, Any] = ctx.store.get_run(run_id)
    principal, _permission = current()
    try:
        if principal.run_id is not None and principal.run_id != row["id"]:
            raise NotFoundError("another run")
        require_experiment(ctx.auth, row["experiment"], wanted)
    except NotFoundError:
        raise NotFoundError(f"no run {run_id!r} in this workspace; `torchyard runs list` shows the runs",
                            run_id=run_id) from None
    return row


def _visible(ctx: Context) -> list[str] | None:
    """The experiments the caller may see (None: all of them)."""
    from torchyard.server.auth import current  # noqa: PLC0415

    principal, _permission = current()
    levels = ctx.auth.levels(principal, None)
    return None if levels is None else sorted(levels)


def _sdk_run(ctx: Context, run_id: str) -> Any:
    from torchyard.experiment import Experiment  # noqa: PLC0415
    from torchyard.run import Run  # noqa: PLC0415

    row = _run_row(ctx, run_id)
    exp = Experiment(ctx.workspace, row["experiment"])
    if _is_sweep(row):
        from torchyard.sweeps.run import HyperDriveRun  # noqa: PLC0415

        return HyperDriveRun(exp, run_id, _row=row)
    return Run(exp, run_id, _row=row)


def _is_sweep(row: dict[str, Any]) -> bool:
    return bool(row.get("kind") == RunKind.SWEEP)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "experiment", "parent_id", "status", "display_name", "compute_target", "created_at",
            "started_at", "ended_at", "exit_code")
    return {k: row.get(k) for k in keys}
