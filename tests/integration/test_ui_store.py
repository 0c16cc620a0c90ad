"""The dashboard's read queries and the per-run metric summary on SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from torchyard.workspace.browse import list_runs_page, metric_keys, read_chunks
from torchyard.workspace.store import Store
from torchyard.workspace.summary import get_summaries, rebuild_summary, update_summary


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = Store(f"sqlite:///{tmp_path}/store.db", lock_dir=str(tmp_path))
        yield opened
        opened.dispose()
        return
    admin_url = request.getfixturevalue("pg_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    opened = Store(admin_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield opened
    finally:
        opened.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _run(store: Store, run_id: str, **kw: object) -> None:
    store.create_run(run_id=run_id, experiment=str(kw.pop("experiment", "e")), spec_json=json.dumps({}),
                     compute_target="local", run_dir=f"/r/{run_id}", tags=kw.pop("tags", {}))  # type: ignore[arg-type]


def test_summary_kept_incrementally_matches_a_rebuild(store: Store) -> None:
    _run(store, "a")
    batches = [("loss", [3.0, float("nan"), 1.0], [0, 1, 2], [1.0, 2.0, 3.0]),
               ("loss", [5.0, 2.0], [3, 4], [4.0, 5.0]), ("acc", [0.5], [None], [6.0])]
    for batch in batches:
        store.insert_series("a", 0, [batch])
        update_summary(store.engine, "a", 0, [batch])
    update_summary(store.engine, "a", 1, [("loss", [-100.0], [0], [1.0])])  # other ranks are not summarized
    two = [("acc", [0.7], [1], [7.0]), ("acc", [0.6], [2], [8.0])]  # one metric twice in one ingest
    store.insert_series("a", 0, two)
    update_summary(store.engine, "a", 0, two)
    kept = get_summaries(store.read_engine, ["a"])["a"]
    assert kept["loss"] == {"count": 5, "last": 2.0, "min": 1.0, "max": 5.0, "last_step": 4, "last_ts": 5.0}
    assert kept["acc"] == {"count": 3, "last": 0.6, "min": 0.5, "max": 0.7, "last_step": 2, "last_ts": 8.0}
    assert rebuild_summary(store.engine, "a") == 2
    assert get_summaries(store.read_engine, ["a"])["a"] == kept


def test_runs_page_keyset_on_a_metric_and_tags(store: Store) -> None:
    for i in range(10):
        _run(store, f"r{i}", tags={"even": "yes"} if i % 2 == 0 else {})
        series = [("score", [float(i % 4)], [0], [1.0])]
        store.insert_series(f"r{i}", 0, series)
        update_summary(store.engine, f"r{i}", 0, series)
    seen, cursor = [], None
    while True:
        rows, cursor = list_runs_page(store.read_engine, sort="metric:score", descending=True, limit=4, cursor=cursor)
        seen += [r["id"] for r in rows]
        if cursor is None:
            break
    expected = sorted((f"r{i}" for i in range(10)), key=lambda rid: (int(rid[1:]) % 4, rid), reverse=True)
    assert seen == expected  # ties broken by id, no run twice, none lost
    rows, _ = list_runs_page(store.read_engine, tags={"even": "yes"}, sort="id", descending=False)
    assert [r["id"] for r in rows] == ["r0", "r2", "r4", "r6", "r8"]
    assert metric_keys(store.read_engine, "r3") == [{"rank": 0, "name": "score", "count": 1, "last_chunk": 4}]
    assert len(read_chunks(store.read_engine, "r3", after_id=4)) == 0
