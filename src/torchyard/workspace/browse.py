"""Read-side queries for the dashboard and its JSON API: a page of runs (filters, sort, keyset
pagination), a run's metric keys, and a series' packed arrays read straight from ``metric_chunks``.

Each function takes the store's (read) engine, so it works on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, and_, exists, func, or_, select, tuple_

from torchyard.errors import SpecError
from torchyard.workspace.schema import metric_chunks, run_metric_summary, run_tags, runs

#: sort keys of :func:`list_runs_page` besides ``metric:NAME``
SORT_KEYS = ("created_at", "started_at", "ended_at", "status", "experiment", "name", "id")
RUN_COLUMNS = (
    runs.c.id, runs.c.experiment, runs.c.parent_id, runs.c.status, runs.c.display_name,
    runs.c.compute_target, runs.c.created_at, runs.c.started_at, runs.c.ended_at, runs.c.exit_code,
)


def _encode_cursor(value: Any, run_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, run_id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, run_id = json.loads(raw)
    except (ValueError, TypeError):
        raise SpecError("cursor", "is not a cursor this server handed out") from None
    if not isinstance(run_id, str):
        raise SpecError("cursor", "is not a cursor this server handed out")
    return value, run_id


def list_runs_page(
    engine: Engine,
    *,
    experiment: str | None = None,
    status: Sequence[str] = (),
    tags: dict[str, str | None] | None = None,
    parent_id: str | None = None,
    top_level: bool = False,
    search: str | None = None,
    metric: tuple[str, float | None, float | None] | None = None,
    sort: str = "created_at",
    descending: bool = True,
    limit: int = 50,
    cursor: str | None = None,
    experiments: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs and the cursor of the next page (None at the end).

    ``tags``: ``{key: value}`` (``None``: the key is present). ``metric``: (name, low, high): only runs
    whose rank-0 ``name`` last value lies in [low, high] (None: unbounded). ``sort``: one of :data:`SORT_KEYS`, or
    ``metric:NAME`` (the last value of rank 0's scalar ``NAME``; only runs that logged it are listed).
    Keyset pagination on (sort value, run id): a page costs the same wherever it is."""
    sort_metric = None
    if sort.startswith("metric:"):
        sort_metric = sort[len("metric:"):]
        if not sort_metric:
            raise SpecError("sort", "metric: needs a metric name, e.g. metric:loss")
        key: Any = run_metric_summary.c.last
    elif sort == "name":
        key = func.coalesce(runs.c.display_name, runs.c.id)
    elif sort in ("started_at", "ended_at"):
        key = func.coalesce(runs.c[sort], 0.0)
    elif sort in SORT_KEYS:
        key = runs.c[sort]
    else:
        raise SpecError("sort", f"unknown sort key {sort!r}; use one of {', '.join(SORT_KEYS)} or metric:NAME")
    query = select(*RUN_COLUMNS, key.label("sort_value"))
    if sort_metric is not None:
        query = query.join(
            run_metric_summary,
            and_(run_metric_summary.c.run_id == runs.c.id, run_metric_summary.c.name == sort_metric),
        ).where(run_metric_summary.c.last.is_not(None))
    if metric is not None:
        name, low, high = metric
        cond = and_(run_metric_summary.c.run_id == runs.c.id, run_metric_summary.c.name == name)
        if low is not None:
            cond = and_(cond, run_metric_summary.c.last >= low)
        if high is not None:
            cond = and_(cond, run_metric_summary.c.last <= high)
        query = query.where(exists().where(cond))
    if experiment:
        query = query.where(runs.c.experiment == experiment)
    if experiments is not None:  # the team server: only the experiments the caller may see
        query = query.where(runs.c.experiment.in_(list(experiments)))
    if status:
        query = query.where(runs.c.status.in_(list(status)))
    if parent_id is not None:
        query = query.where(runs.c.parent_id == parent_id)
    elif top_level:
        query = query.where(runs.c.parent_id.is_(None))
    if search:
        like = f"%{search.replace('%', '').replace('_', '')}%"
        query = query.where(or_(runs.c.id.like(like), runs.c.display_name.like(like)))
    for tkey, tvalue in (tags or {}).items():
        cond = and_(run_tags.c.run_id == runs.c.id, run_tags.c.key == tkey)
        if tvalue is not None:
            cond = and_(cond, run_tags.c.value == tvalue)
        query = query.where(exists().where(cond))
    # the tie-breaker is the summary's own run_id when sorting by a metric, so the index
    # (name, last, run_id) serves both the order and the keyset condition
    tie = run_metric_summary.c.run_id if sort_metric is not None else runs.c.id
    if cursor:
        value, after = _decode_cursor(cursor)
        if value is None:
            raise SpecError("cursor", "is not a cursor this server handed out")
        pair = tuple_(key, tie)
        query = query.where(pair < tuple_(value, after) if descending else pair > tuple_(value, after))
    order = (key.desc(), tie.desc()) if descending else (key.asc(), tie.asc())
    query = query.order_by(*order).limit(limit + 1)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1]["sort_value"], rows[-1]["id"])
    for row in rows:
        row.pop("sort_value", None)
    return rows, next_cursor


def get_tags_for(engine: Engine, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{run id: tags}`` for several runs in one query."""
    out: dict[str, dict[str, str]] = {rid: {} for rid in run_ids}
    if run_ids:
        with engine.connect() as conn:
            for rid, key, value in conn.execute(
                select(run_tags.c.run_id, run_tags.c.key, run_tags.c.value).where(run_tags.c.run_id.in_(list(run_ids)))
            ):
                out[rid][key] = value
    return out


def metric_keys(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    """Every (rank, name) scalar series of a run with its value count and newest chunk id."""
    t = metric_chunks
    query = (
        select(t.c.rank, t.c.name, func.sum(t.c.count), func.max(t.c.id))
        .where(t.c.run_id == run_id)
        .group_by(t.c.rank, t.c.name)
        .order_by(t.c.name, t.c.rank)
    )
    with engine.connect() as conn:
        return [
            {"rank": int(rank), "name": name, "count": int(count), "last_chunk": int(last)}
            for rank, name, count, last in conn.execute(query)
        ]


def latest_chunk_id(engine: Engine, run_id: str) -> int:
    """The id of the run's newest metric chunk (0 when it has none)."""
    with engine.connect() as conn:
        value = conn.execute(select(func.max(metric_chunks.c.id)).where(metric_chunks.c.run_id == run_id)).scalar()
    return int(value or 0)


def read_chunks(
    engine: Engine, run_id: str, *, rank: int | None = None, name: str | None = None, after_id: int = 0
) -> list[tuple[int, int, str, bytes, bytes, bytes]]:
    """Raw chunks (id, rank, name, vals, steps, ts) in storage order, newer than ``after_id``."""
    t = metric_chunks
    query = select(t.c.id, t.c.rank, t.c.name, t.c.vals, t.c.steps, t.c.ts).where(t.c.run_id == run_id)
    if rank is not None:
        query = query.where(t.c.rank == rank)
    if name is not None:
        query = query.where(t.c.name == name)
    if after_id:
        query = query.where(t.c.id > after_id)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(t.c.id))]


def status_changes(engine: Engine, since: float, active: Sequence[str],
                   experiments: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs that are active, or ended after ``since`` (what a live runs table needs to refresh);
    ``experiments``: only theirs."""
    query = select(runs.c.id, runs.c.status, runs.c.started_at, runs.c.ended_at).where(
        or_(runs.c.status.in_(list(active)), runs.c.ended_at >= since)
    )
    if experiments is not None:
        query = query.where(runs.c.experiment.in_(list(experiments)))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
