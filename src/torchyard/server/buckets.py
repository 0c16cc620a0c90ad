"""Series reduction for charts: min/max/first/last per x bucket, so every spike survives at any zoom.

The packed float64 arrays of ``metric_chunks`` are read into numpy once per series and kept in a
small cache, extended with newer chunks only, so re-bucketing a zoomed range of a 1M-value series
costs a few binary searches and ``reduceat`` calls.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torchyard.workspace.schema import NO_STEP


@dataclass
class SeriesArrays:
    """One scalar series: values, steps (NO_STEP where none), wall times, and its newest chunk id."""

    vals: np.ndarray
    steps: np.ndarray
    ts: np.ndarray
    last_chunk: int
    axes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """x axis name -> (x values sorted, values in that order), computed once per series version"""


def _join(parts: list[Any], dtype: Any) -> np.ndarray:
    """One array from arrays and raw buffers, copied once."""
    if not parts:
        return np.empty(0, dtype=dtype)
    arrays = [p if isinstance(p, np.ndarray) else np.frombuffer(p, dtype=dtype) for p in parts]
    return arrays[0].copy() if len(arrays) == 1 else np.concatenate(arrays)


class SeriesCache:
    """An LRU of recently charted series, extended with newer chunks on each read."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int, str], SeriesArrays] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, engine: Any, run_id: str, rank: int, name: str) -> SeriesArrays:
        from torchyard.workspace.browse import read_chunks  # noqa: PLC0415

        key = (run_id, rank, name)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
        after = cached.last_chunk if cached is not None else 0
        chunks = read_chunks(engine, run_id, rank=rank, name=name, after_id=after)
        if cached is not None and not chunks:
            return cached
        head = [cached] if cached is not None else []
        vals = _join([h.vals for h in head] + [c[3] for c in chunks], np.float64)
        steps = _join([h.steps for h in head] + [c[4] for c in chunks], np.int64)
        ts = _join([h.ts for h in head] + [c[5] for c in chunks], np.float64)
        last = chunks[-1][0] if chunks else after
        fresh = SeriesArrays(vals, steps, ts, last)
        with self._lock:
            self._items[key] = fresh
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return fresh


def x_axis(series: SeriesArrays, x: str) -> np.ndarray:
    """The x values of a series: its steps (the value's index where any step is missing) or times."""
    if x == "time":
        return series.ts
    if len(series.steps) and (series.steps == NO_STEP).any():
        return np.arange(len(series.vals), dtype=np.float64)
    return series.steps.astype(np.float64)


def sorted_axis(series: SeriesArrays, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x values in increasing order, the values in that order), cached on the series."""
    found = series.axes.get(x)
    if found is None:
        xs, vals = x_axis(series, x), series.vals
        if len(xs) > 1 and not bool((xs[1:] >= xs[:-1]).all()):
            order = np.argsort(xs, kind="stable")
            xs, vals = xs[order], vals[order]
        found = series.axes[x] = (xs, vals)
    return found


def reduce_series(
    xs: np.ndarray, vals: np.ndarray, lo: float | None, hi: float | None, points: int
) -> dict[str, Any]:
    """Reduce (xs, vals) within [lo, hi] to at most ``points`` buckets of equal x width; ``xs`` must
    be in increasing order (:func:`sorted_axis`).

    Returns ``{"mode": "raw", "x", "y"}`` when the range holds no more than ``points`` values, else
    ``{"mode": "buckets", "x", "x_last", "min", "max", "first", "last", "n"}`` with one entry per
    non-empty bucket (``x``/``x_last``: the x of its first/last value; NaN values are ignored by
    min/max)."""
    total = len(xs)
    full_lo = float(xs[0]) if total else 0.0
    full_hi = float(xs[-1]) if total else 0.0
    lo = full_lo if lo is None else lo
    hi = full_hi if hi is None else hi
    i0 = int(np.searchsorted(xs, lo, "left"))
    i1 = int(np.searchsorted(xs, hi, "right"))
    sx, sv = xs[i0:i1], vals[i0:i1]
    out: dict[str, Any] = {"total": total, "x_min": full_lo, "x_max": full_hi, "from": lo, "to": hi,
                           "selected": int(len(sx))}
    if len(sx) <= points:
        out.update(mode="raw", x=sx, y=sv)
        return out
    edges = np.linspace(lo, hi, points + 1)
    starts = np.searchsorted(sx, edges[:-1], "left")
    ends = np.append(starts[1:], len(sx))
    keep = ends > starts
    s, e = starts[keep], ends[keep]
    out.update(
        mode="buckets",
        x=sx[s],
        x_last=sx[e - 1],
        min=np.fmin.reduceat(sv, s),
        max=np.fmax.reduceat(sv, s),
        first=sv[s],
        last=sv[e - 1],
        n=e - s,
    )
    return out


def round_significant(arr: np.ndarray, digits: int) -> np.ndarray:
    """``arr`` rounded to ``digits`` significant digits (so its shortest repr is at most that long);
    zeros, NaN and infinities pass through."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mag = np.floor(np.log10(np.abs(arr)))
        scale = np.power(10.0, digits - 1 - mag)
        out = np.round(arr * scale) / scale
    keep = ~np.isfinite(out)
    if keep.any():
        out[keep] = arr[keep]
    return out


def to_json(reduced: dict[str, Any], integer_x: bool) -> bytes:
    """JSON of :func:`reduce_series`'s result: bucket values rounded to 7 significant digits (a chart
    needs no more), raw points at full precision; NaN and infinities become null."""
    import msgspec  # noqa: PLC0415

    doc: dict[str, Any] = {}
    for key, value in reduced.items():
        if isinstance(value, np.ndarray):
            if key == "n" or (integer_x and key in ("x", "x_last")):
                value = value.astype(np.int64)
            elif reduced["mode"] == "buckets" and key not in ("x", "x_last"):
                value = round_significant(value, 7)
            doc[key] = value.tolist()
        else:
            doc[key] = value
    return msgspec.json.encode(doc)


#: the run page's chart grid (style.css): charts at least this wide, this far apart, this much axis
CHART_MIN_PX, CHART_GAP_PX, CHART_AXIS_PX = 472, 12, 78
#: at most this many charts are answered along with a run's metric keys
FIRST_CHARTS = 12


def chart_points(width: int, charts: int) -> int:
    """Buckets for each of ``charts`` charts laid out in ``width`` pixels (the run page's grid)."""
    cols = max(1, min(charts, (width + CHART_GAP_PX) // CHART_MIN_PX))
    return max(50, round((width - (cols - 1) * CHART_GAP_PX) / cols - CHART_AXIS_PX))
