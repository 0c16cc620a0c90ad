"""Values on the data path: the limits run.log enforces (declared once in torchyard.limits), the JSON
encoding of non-finite floats, and a journal that loses nothing when the disk refuses a write."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchyard import limits
from torchyard.server.routing import json_text
from torchyard.tracking import journal as j
from torchyard.tracking.context import LiveRun


@pytest.fixture
def live(tmp_path: Path):
    env = {"TORCHYARD_RUN_ID": "r1", "TORCHYARD_JOURNAL_DIR": str(tmp_path / "j"), "RANK": "0",
           "TORCHYARD_UPLOAD_DIR": str(tmp_path / "up")}
    run = LiveRun(env)
    yield run
    import atexit

    atexit.unregister(run._flush_at_exit)
    run._fh.close()


def _read(tmp_path: Path) -> tuple[list, list]:
    return j.JournalReader(str(tmp_path / "j" / "rank_0.journal")).read_new()


def test_names_over_the_limit_are_refused_in_the_script_and_nothing_before_is_lost(live, tmp_path: Path) -> None:
    live.log("ok", 1.0)
    with pytest.raises(ValueError, match="limit is 250"):
        live.log("m" * 251, 1.0)
    with pytest.raises(ValueError, match="must not be empty"):
        live.log("", 1.0)
    with pytest.raises(ValueError, match="NUL"):
        live.log("a\x00b", 1.0)
    with pytest.raises(ValueError, match="surrogate"):
        live.log("bad\ud800", 1.0)
    with pytest.raises(ValueError, match="65,536"):
        live.log("text", "x" * 70000)
    with pytest.raises(ValueError, match="limit is 8,000"):
        live.tag("k", "v" * 8001)
    with pytest.raises(ValueError, match="tag key"):
        live.tag("k" * 300, "v")
    with pytest.raises(TypeError, match="step must be an integer"):
        live.log("ok", 2.0, step=1.5)
    with pytest.raises(ValueError, match="64-bit"):
        live.log("ok", 2.0, step=2**63)
    with pytest.raises(ValueError, match="too large"):
        live.log("ok", 10**400)
    live.log("m" * 250, 2.0)
    live.log("ok", 3, step=True.__index__())
    live.flush()
    series, _records = _read(tmp_path)
    assert {s[0]: s[1] for s in series} == {"ok": [1.0, 3.0], "m" * 250: [2.0]}


def test_numbers_keep_their_documented_shape(live, tmp_path: Path) -> None:
    import numpy as np

    live.log("big", 2**60)
    live.log("np", np.float32(0.5))
    live.log("npi", np.int64(7), step=np.int64(3))
    live.log("flag", True)
    live.log("inf", math.inf)
    live.log("nan", math.nan)
    live.flush()
    got = {s[0]: (s[1], s[2]) for s in _read(tmp_path)[0]}
    assert got["big"] == ([float(2**60)], [None])
    assert got["np"] == ([0.5], [None]) and got["npi"] == ([7.0], [3]) and got["flag"] == ([1.0], [None])
    assert got["inf"][0] == [math.inf] and math.isnan(got["nan"][0][0])


def test_a_refused_journal_write_keeps_the_values_and_leaves_no_torn_frame(live, tmp_path: Path, monkeypatch) -> None:
    live.log("a", 1.0)
    live.flush()
    real_write = live._fh.write
    calls = {"n": 0}

    def full_disk(data):  # half a frame gets out, then the disk is full
        calls["n"] += 1
        real_write(bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live, "_fh", _Wrapped(live._fh, full_disk))
    for i in range(5):
        live.log("a", float(i + 2))
    assert live._flush_reporting() is False
    assert live._flush_reporting() is False  # still full: said once, values still waiting
    assert calls["n"] == 2 and len(live._pending) == 5
    size = os.path.getsize(tmp_path / "j" / "rank_0.journal")
    monkeypatch.setattr(live, "_fh", _Wrapped(live._fh.inner, real_write))
    live.log("a", 7.0)
    assert live._flush_reporting() is True
    assert os.path.getsize(tmp_path / "j" / "rank_0.journal") > size
    series, _ = _read(tmp_path)
    assert [v for s in series for v in s[1]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


class _Wrapped:
    def __init__(self, inner, write) -> None:
        self.inner, self.write = inner, write

    def fileno(self) -> int:
        return int(self.inner.fileno())

    def close(self) -> None:
        self.inner.close()


def test_the_journal_reader_moves_on_only_when_told(tmp_path: Path) -> None:
    path = tmp_path / "rank_0.journal"
    path.write_bytes(j.encode_frame(*j.pack([(j.SCALAR, "x", 1.0, None, 1.0)])))
    reader = j.JournalReader(str(path))
    first = reader.peek()
    assert reader.peek() == first and reader.offset == 0
    reader.offset = first[2]
    assert reader.peek()[:2] == ([], [])


def test_json_text_writes_non_finite_floats_as_documented_strings() -> None:
    doc = {"a": math.inf, "b": [-math.inf, math.nan, 1.5], "c": {"d": (math.nan,)}, "e": "x"}
    out = json.loads(json_text(doc))  # strict JSON: no bare Infinity/NaN tokens
    assert out == {"a": "Infinity", "b": ["-Infinity", "NaN", 1.5], "c": {"d": ["NaN"]}, "e": "x"}
    assert "Infinity" not in json_text({"a": 1.0})
    assert limits.decode_number("-Infinity") == -math.inf and math.isnan(limits.decode_number("NaN"))
    assert limits.decode_number("text") == "text"


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers(-2**53, 2**53) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
def test_any_value_makes_strict_json(value) -> None:
    text = json_text({"v": value})
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {text}"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_check_name_accepts_exactly_what_every_store_can_keep(name: str) -> None:
    storable = 0 < len(name) <= limits.MAX_NAME and "\x00" not in name and not any(
        0xD800 <= ord(c) <= 0xDFFF for c in name)
    try:
        limits.check_name(name)
    except ValueError:
        assert not storable
    else:
        assert storable
