"""The chart reduction: min/max/first/last buckets keep every spike; raw ranges keep full precision."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from torchyard.server.buckets import SeriesArrays, reduce_series, round_significant, sorted_axis, to_json
from torchyard.workspace.schema import NO_STEP


@pytest.mark.parametrize("points", [1, 7, 100, 999])
def test_every_spike_survives_any_bucket_count(points: int) -> None:
    vals = np.exp(-np.arange(10_000) / 1000.0)
    vals[1234], vals[8765] = 1e9, -1e9
    out = reduce_series(np.arange(10_000, dtype=np.float64), vals, None, None, points)
    assert out["mode"] == "buckets" and len(out["min"]) <= points
    assert out["max"].max() == 1e9 and out["min"].min() == -1e9
    assert int(out["n"].sum()) == 10_000
    assert out["first"][0] == 1.0 and out["last"][-1] == vals[-1]


def test_a_small_range_comes_back_raw() -> None:
    xs = np.arange(100, dtype=np.float64)
    out = reduce_series(xs, xs / 3, 10, 20, 50)
    assert out["mode"] == "raw" and out["x"].tolist() == list(range(10, 21))
    assert out["y"][0] == 10 / 3 and out["selected"] == 11 and out["total"] == 100


def test_nan_is_ignored_by_min_max_and_becomes_null() -> None:
    vals = np.array([1.0, np.nan, 3.0, 2.0] * 10)
    out = reduce_series(np.arange(40, dtype=np.float64), vals, None, None, 4)
    assert out["min"].tolist() == [1.0] * 4 and out["max"].tolist() == [3.0] * 4
    doc = json.loads(to_json(reduce_series(np.arange(4.0), np.array([1.0, math.nan, math.inf, 2.0]), None, None, 10),
                             integer_x=True))
    assert doc["y"] == [1.0, None, None, 2.0] and doc["x"] == [0, 1, 2, 3]


def test_round_significant() -> None:
    got = round_significant(np.array([0.123456789, -98765.4321, 0.0, 1e-300, 123456789.0]), 7).tolist()
    assert got == [0.1234568, -98765.43, 0.0, 1e-300, 123456800.0]


def test_unsorted_steps_are_sorted_and_missing_steps_use_the_index() -> None:
    s = SeriesArrays(np.array([1.0, 2.0, 3.0]), np.array([5, 1, 3]), np.array([1.0, 2.0, 3.0]), 1)
    xs, vals = sorted_axis(s, "step")
    assert xs.tolist() == [1, 3, 5] and vals.tolist() == [2.0, 3.0, 1.0]
    s2 = SeriesArrays(np.array([1.0, 2.0]), np.array([NO_STEP, 7]), np.array([1.0, 2.0]), 1)
    assert sorted_axis(s2, "step")[0].tolist() == [0.0, 1.0]
    assert sorted_axis(s2, "time")[0].tolist() == [1.0, 2.0]
