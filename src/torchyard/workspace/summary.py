"""A per-run summary of rank 0's scalar metrics (count, last, min, max, last step and time).

The runs table sorts and shows last/best values from it without reading any packed series. The
supervisor's ingestor keeps it current by calling :func:`update_summary` after each
``insert_series``; :func:`rebuild_summary` recomputes a run's rows from ``metric_chunks`` (runs
ingested before the summary existed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, case, delete, insert, select

from torchyard.workspace.schema import NO_STEP, metric_chunks, run_metric_summary

Series = tuple[str, Sequence[float], Sequence[int | None], Sequence[float]]


def _summarize(values: Sequence[float], steps: Sequence[int | None], ts: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    finite = [v for v in values if not math.isnan(v)] if any(map(math.isnan, values)) else values
    last_step = steps[-1] if steps else None
    return {
        "count": len(values),
        "last": None if math.isnan(values[-1]) else float(values[-1]),
        "min": min(finite) if finite else None,
        "max": max(finite) if finite else None,
        "last_step": None if last_step is None or last_step == NO_STEP else int(last_step),
        "last_ts": float(ts[-1]) if ts else None,
    }


def update_summary(engine: Engine | Connection, run_id: str, rank: int, series: Sequence[Series]) -> None:
    """Fold newly ingested ``series`` ((name, values, steps, wall times), as given to
    ``Store.insert_series``) of ``rank`` into the run's summary. Only rank 0 is summarized. Given a
    connection, in its transaction (the ingest's own: the values and their summary go together)."""
    if rank != 0:
        return
    merged: dict[str, tuple[list[float], list[int | None], list[float]]] = {}
    for name, values, steps, ts in series:  # one row per metric: an upsert may touch a key only once
        acc = merged.setdefault(name, ([], [], []))
        acc[0].extend(values)
        acc[1].extend(steps)
        acc[2].extend(ts)
    rows = []
    for name, (values, steps, ts) in merged.items():
        part = _summarize(values, steps, ts)
        if part is not None:
            rows.append({"run_id": run_id, "name": name, **part})
    if not rows:
        return
    t = run_metric_summary
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

        stmt: Any = pg_insert(t)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

        stmt = sqlite_insert(t)
    ex = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "name"],
        set_={
            "count": t.c.count + ex["count"],
            "last": ex["last"],
            "min": case((t.c.min.is_(None) | (ex["min"] < t.c.min), ex["min"]), else_=t.c.min),
            "max": case((t.c.max.is_(None) | (ex["max"] > t.c.max), ex["max"]), else_=t.c.max),
            "last_step": ex["last_step"],
            "last_ts": ex["last_ts"],
        },
    )
    if isinstance(engine, Connection):
        engine.execute(stmt, rows)
        return
    with engine.begin() as conn:
        conn.execute(stmt, rows)


def rebuild_summary(engine: Engine | Connection, run_id: str) -> int:
    """Recompute ``run_id``'s summary from its packed rank-0 series; returns the metrics summarized.
    Given a connection, in its transaction."""
    if isinstance(engine, Connection):
        return _rebuild(engine, run_id)
    with engine.begin() as conn:
        return _rebuild(conn, run_id)


def _rebuild(conn: Connection, run_id: str) -> int:
    import numpy as np  # noqa: PLC0415

    query = (
        select(metric_chunks.c.name, metric_chunks.c.vals, metric_chunks.c.steps, metric_chunks.c.ts)
        .where(metric_chunks.c.run_id == run_id, metric_chunks.c.rank == 0)
        .order_by(metric_chunks.c.id)
    )
    acc: dict[str, list[list[bytes]]] = {}
    for name, vals, steps, ts in conn.execute(query):
        parts = acc.setdefault(name, [[], [], []])
        parts[0].append(vals)
        parts[1].append(steps)
        parts[2].append(ts)
    rows = []
    for name, (vals, steps, ts) in acc.items():
        v = np.frombuffer(b"".join(vals), dtype=np.float64)
        s = np.frombuffer(b"".join(steps), dtype=np.int64)
        t = np.frombuffer(b"".join(ts), dtype=np.float64)
        if not len(v):
            continue
        finite = v[~np.isnan(v)]
        rows.append({
            "run_id": run_id,
            "name": name,
            "count": int(len(v)),
            "last": None if math.isnan(v[-1]) else float(v[-1]),
            "min": float(finite.min()) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None,
            "last_step": None if s[-1] == NO_STEP else int(s[-1]),
            "last_ts": float(t[-1]),
        })
    conn.execute(delete(run_metric_summary).where(run_metric_summary.c.run_id == run_id))
    if rows:
        conn.execute(insert(run_metric_summary), rows)
    return len(rows)


def get_summaries(engine: Engine, run_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{run id: {metric: {count, last, min, max, last_step, last_ts}}}`` for ``run_ids``."""
    out: dict[str, dict[str, dict[str, Any]]] = {rid: {} for rid in run_ids}
    if not run_ids:
        return out
    t = run_metric_summary
    with engine.connect() as conn:
        for row in conn.execute(select(t).where(t.c.run_id.in_(list(run_ids)))).mappings():
            out[row["run_id"]][row["name"]] = {
                k: row[k] for k in ("count", "last", "min", "max", "last_step", "last_ts")
            }
    return out
