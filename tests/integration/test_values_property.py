"""Property: any value hypothesis makes goes through ``run.log`` → the rank's journal → the supervisor's
ingest → the store (SQLite and a real PostgreSQL) → the SDK's readers unchanged, or is refused at the
call with a ValueError/TypeError naming it; then a real ``torchyard ui`` server answers every run's API
routes with strict JSON and never a 5xx. Values logged are counted against values kept."""

from __future__ import annotations

import atexit
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchyard.runtime.ingest import Ingestor
from torchyard.runtime.summary import metrics_by_rank
from torchyard.tracking.context import LiveRun
from torchyard.workspace.store import Store

NAMES = st.text(min_size=0, max_size=300)  # the empty, the too long, NUL and surrogates included
SCALARS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70) | st.booleans()
VALUES = SCALARS | st.text(max_size=200)
EVENTS = st.lists(st.tuples(NAMES, VALUES, st.none() | st.integers(-(2**64), 2**64)), min_size=1, max_size=12)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    folder = tmp_path / ".torchyard"
    folder.mkdir()
    (folder / "workspace.json").write_text("{}")
    if request.param == "sqlite":
        url = f"sqlite:///{folder}/store.db"
    else:
        url = request.getfixturevalue("pg_database")
        (folder / "workspace.json").write_text(json.dumps({"db_url": url}))
    s = Store(url, lock_dir=str(folder))
    yield s
    s.dispose()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return bool(a == b)


def test_any_logged_value_is_kept_or_refused_at_the_call(store: Store, tmp_path: Path) -> None:
    counter = iter(range(10**6))
    kept_runs: list[str] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
    @given(EVENTS)
    def check(events: list[tuple[str, Any, int | None]]) -> None:
        run_id = f"prop_{next(counter)}"
        run_dir = tmp_path / ".torchyard" / "runs" / run_id
        store.create_run(run_id=run_id, experiment="prop", spec_json="{}", compute_target="local",
                         run_dir=str(run_dir), tags={})
        live = LiveRun({"TORCHYARD_RUN_ID": run_id, "TORCHYARD_JOURNAL_DIR": str(run_dir / "journal"), "RANK": "0",
                        "TORCHYARD_UPLOAD_DIR": str(run_dir / "up")})
        atexit.unregister(live._flush_at_exit)
        expected: dict[str, list[Any]] = {}
        try:
            for name, value, step in events:
                try:
                    live.log(name, value, step=step)
                except (ValueError, TypeError) as err:
                    assert str(err)  # refused at the call, with a reason
                    continue
                shown = float(value) if isinstance(value, bool | int) else value
                expected.setdefault(name, []).append(shown)
            live.flush()
        finally:
            live._fh.close()
        ingestor = Ingestor(store, run_id, str(run_dir / "journal"))
        stored = ingestor.ingest()
        assert ingestor.fault is None
        assert stored == sum(len(v) for v in expected.values())  # logged == kept
        got = metrics_by_rank(store, run_id).get(0, {})
        assert set(got) == set(expected)
        for name, values in expected.items():
            seen = got[name] if len(values) > 1 else [got[name]]
            assert len(seen) == len(values) and all(_same(a, b) for a, b in zip(seen, values, strict=True)), name
        kept_runs.append(run_id)

    check()
    assert kept_runs
    if store.is_sqlite:  # one real server over what the property put in the store
        import httpx
        from uiserver import ui_server

        with ui_server(str(tmp_path / ".torchyard")) as server, httpx.Client(base_url=server.url, timeout=30) as c:
            for path in ["/api/v1/runs?limit=500", "/api/v1/runs?sort=metric:x&limit=500"] + [
                    p for run_id in kept_runs[:25] for p in (f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/values",
                                                            f"/api/v1/runs/{run_id}/metrics?charts_width=1000")]:
                resp = c.get(path)
                assert resp.status_code == 200, (path, resp.text[:300])
                json.loads(resp.text, parse_constant=_bare)


def _bare(constant: str) -> None:
    raise AssertionError(f"a bare {constant} in a JSON answer")
