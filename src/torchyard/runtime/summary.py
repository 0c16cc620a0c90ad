"""A run's metrics in Azure's shapes, and the execution summary printed at the end of a run."""

from __future__ import annotations

import json
import time
from typing import Any


def shape_metrics(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Azure's shapes: a scalar for a metric logged once, a list for one logged more often;
    rows accumulate into ``{column: [values]}``; tables are ``{column: [values]}``."""
    values: dict[str, list[Any]] = {}
    kinds: dict[str, int] = {}
    for name, _rank, _step, value, payload, kind, _ts in rows:
        kinds[name] = kind
        values.setdefault(name, []).append(value if kind == 0 else json.loads(payload))
    out: dict[str, Any] = {}
    for name, vals in values.items():
        kind = kinds[name]
        if kind == 2:  # rows
            table: dict[str, list[Any]] = {}
            for row in vals:
                for col, v in row.items():
                    table.setdefault(col, []).append(v)
            out[name] = table
        elif kind in (1, 3):  # list, table: the last one logged
            out[name] = vals[-1] if len(vals) == 1 else vals
        else:
            out[name] = vals[0] if len(vals) == 1 else vals
    return out


def metrics_by_rank(store: Any, run_id: str, rank: int | None = 0, name: str | None = None) -> dict[int, dict[str, Any]]:
    """``{rank: {metric: value or [values]}}`` for one rank (``rank=None``: every rank)."""
    by_rank: dict[int, dict[str, Any]] = {}
    series = store.get_series(run_id, rank=rank, name=name)
    for (r, metric), (values, _steps, _ts) in series.items():
        by_rank.setdefault(r, {})[metric] = values[0] if len(values) == 1 else values
    rows_by_rank: dict[int, list[tuple[Any, ...]]] = {}
    for row in store.get_metric_rows(run_id, rank=rank, name=name):
        rows_by_rank.setdefault(row[1], []).append(row)
    for r, rows in rows_by_rank.items():
        shaped = shape_metrics(rows)
        mine = by_rank.setdefault(r, {})
        for metric in shaped.keys() & mine.keys():  # numbers and strings (say) under one name
            shaped[metric] = _interleave(series[(r, metric)], [row for row in rows if row[0] == metric])
        mine.update(shaped)
    return by_rank


def _interleave(scalars: tuple[list[float], list[Any], list[float]], rows: list[tuple[Any, ...]]) -> list[Any]:
    """Every value of a name logged as numbers and as other kinds, in the order logged (wall time;
    a tie keeps numbers first): no reader drops the numbers because a string came later."""
    values, _steps, ts = scalars
    merged = [(t, 0, i, v) for i, (v, t) in enumerate(zip(values, ts, strict=True))]
    merged += [(row[6], 1, i, row[3] if row[5] == 0 else json.loads(row[4])) for i, row in enumerate(rows)]
    merged.sort(key=lambda item: item[:3])
    return [item[3] for item in merged]


def execution_summary(store: Any, row: dict[str, Any]) -> str:
    """The block ``wait_for_completion(show_output=True)`` and ``torchyard run --wait`` end with."""
    dur = (row["ended_at"] or time.time()) - (row["started_at"] or row["created_at"])
    lines = ["", "Execution Summary", "=================", f"RunId: {row['id']}", f"Status: {row['status']}"]
    lines.append(f"Duration: {dur:.1f} s")
    # the training's metrics; the node's system/... samples (launch.sampler) would crowd them out
    metrics = {k: v for k, v in metrics_by_rank(store, row["id"]).get(0, {}).items() if not k.startswith("system/")}
    if metrics:
        parts = []
        for k, v in metrics.items():
            last = v[-1] if isinstance(v, list) and v else v
            parts.append(f"{k}={last:.4g}" if isinstance(last, float) else f"{k}={last}")
        lines.append("Metrics: " + ", ".join(parts))
    details = json.loads(row["details"] or "{}")
    if "error" in details:
        lines.append(f"Error: {details['error'].get('message')}")
    for warning in details.get("warnings") or []:
        lines.append(f"Warning: {warning}")
    return "\n".join(lines) + "\n"
