"""Upgrades keep data: a store built at every earlier schema revision, holding runs, a sweep and its
trials, metrics (rows and packed series), tags, properties, status history and (from 0005) models,
is opened by today's code — which migrates it to the head — and everything reads back, on SQLite and
a real PostgreSQL server."""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

import torchyard.workspace.store as store_module
from torchyard.status import RunKind, RunStatus
from torchyard.workspace.schema import SCHEMA_REVISION
from torchyard.workspace.store import Store

MIGRATIONS = Path(store_module.__file__).resolve().parent / "migrations"
EARLIER = [f"{n:04d}" for n in range(1, int(SCHEMA_REVISION))]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, workspace folder) of an empty database."""
    folder = tmp_path / ".torchyard"
    folder.mkdir()
    if request.param == "sqlite":
        yield f"sqlite:///{folder}/store.db", str(folder)
        return
    yield request.getfixturevalue("pg_database"), str(folder)


def _upgrade_to(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


def _insert(conn: Any, columns: set[str], table: str, row: dict[str, Any]) -> None:
    """Insert the part of ``row`` that ``table`` has at this revision."""
    kept = {k: v for k, v in row.items() if k in columns}
    names = ", ".join(kept)
    conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + k for k in kept)})"), kept)


def _fill(url: str, folder: str) -> None:
    """What a workspace of that revision would hold, written with that revision's tables."""
    engine = create_engine(url)
    tables = {t: {c["name"] for c in inspect(engine).get_columns(t)} for t in inspect(engine).get_table_names()}
    old_dir = "/somewhere/else/proj/.torchyard/runs"  # absolute, as older versions recorded run folders
    runs = [("plain_1", None, '{"entry_script": "train.py"}', "run"),
            ("sweep_1", None, '{"kind": "sweep", "primary_metric": "acc"}', "sweep"),
            ("sweep_1_0", "sweep_1", '{"entry_script": "train.py"}', "trial"),
            ("sweep_1_1", "sweep_1", '{"entry_script": "train.py"}', "trial")]
    with engine.begin() as conn:
        _insert(conn, tables["experiments"], "experiments", {"name": "exp", "created_at": 1.0})
        for i, (run_id, parent, spec, kind) in enumerate(runs):
            os.makedirs(os.path.join(folder, "runs", run_id, "logs"))
            _insert(conn, tables["runs"], "runs", {
                "id": run_id, "experiment": "exp", "parent_id": parent, "status": "Completed", "kind": kind,
                "display_name": f"name {i}", "compute_target": "local", "created_at": 10.0 + i, "started_at": 11.0 + i,
                "ended_at": 12.0 + i, "spec": spec, "details": '{"note": "kept"}', "run_dir": f"{old_dir}/{run_id}",
                "exit_code": 0})
            for j, status in enumerate(("NotStarted", "Queued", "Running", "Completed")):
                _insert(conn, tables["status_events"], "status_events",
                        {"run_id": run_id, "status": status, "ts": 10.0 + i + j / 10, "detail": None})
            _insert(conn, tables["run_tags"], "run_tags", {"run_id": run_id, "key": "owner", "value": "me"})
            _insert(conn, tables["run_properties"], "run_properties", {"run_id": run_id, "key": "commit", "value": "abc"})
            _insert(conn, tables["metrics"], "metrics", {"run_id": run_id, "name": "note", "rank": 0, "step": None,
                                                         "value": None, "payload": '"hello"', "kind": 5, "ts": 20.0})
            _insert(conn, tables["metrics"], "metrics", {"run_id": run_id, "name": "acc", "rank": 0, "step": 0,
                                                         "value": 0.5 + i / 10, "payload": None, "kind": 0, "ts": 21.0})
            if "metric_chunks" in tables:
                _insert(conn, tables["metric_chunks"], "metric_chunks", {
                    "run_id": run_id, "name": "loss", "rank": 0, "count": 3,
                    "steps": array("q", [0, 1, 2]).tobytes(), "vals": array("d", [3.0, 2.0, 1.0]).tobytes(),
                    "ts": array("d", [30.0, 31.0, 32.0]).tobytes()})
        if "models" in tables:
            _insert(conn, tables["model_names"], "model_names", {"name": "digits", "next_version": 2, "created_at": 40.0})
            _insert(conn, tables["models"], "models", {
                "name": "digits", "version": 1, "manifest_id": "m" * 64, "sha256": "s" * 64, "size": 10,
                "file_count": 1, "kind": "file", "file_name": "model.pt", "run_id": "plain_1", "experiment": "exp",
                "description": "first", "framework": "pytorch", "created_at": 41.0})
            _insert(conn, tables["model_tags"], "model_tags", {"name": "digits", "version": 1, "key": "stage", "value": "dev"})
            _insert(conn, tables["model_aliases"], "model_aliases",
                    {"name": "digits", "alias": "prod", "version": 1, "updated_at": 42.0})
    engine.dispose()


@pytest.mark.parametrize("revision", EARLIER)
def test_every_earlier_revision_upgrades_with_its_data(empty_db: tuple[str, str], revision: str) -> None:
    url, folder = empty_db
    _upgrade_to(url, revision)
    _fill(url, folder)
    store = Store(url, lock_dir=folder)  # today's code: migrates to the head
    try:
        with store.read_engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_REVISION
        rows = {r["id"]: r for r in store.list_runs()}
        assert set(rows) == {"plain_1", "sweep_1", "sweep_1_0", "sweep_1_1"}
        assert rows["sweep_1"]["kind"] is RunKind.SWEEP and rows["sweep_1_0"]["kind"] is RunKind.TRIAL
        assert rows["plain_1"]["kind"] is RunKind.RUN and rows["plain_1"]["status"] is RunStatus.COMPLETED
        assert [r["id"] for r in store.list_runs(parent_id="sweep_1")] == ["sweep_1_1", "sweep_1_0"]
        plain = store.get_run("plain_1")
        assert plain["display_name"] == "name 0" and '"kept"' in plain["details"]
        assert plain["run_dir"] == os.path.join(folder, "runs", "plain_1")  # an old absolute folder, found here
        assert [h["status"] for h in store.status_history("plain_1")] == ["NotStarted", "Queued", "Running", "Completed"]
        assert store.get_tags("sweep_1_1") == {"owner": "me"} and store.get_properties("plain_1") == {"commit": "abc"}
        kinds = {(r[0], r[5]) for r in store.get_metric_rows("sweep_1_0")}
        assert kinds == {("note", 5), ("acc", 0)}
        if int(revision) >= 2:
            assert store.get_series("plain_1")[(0, "loss")] == ([3.0, 2.0, 1.0], [0, 1, 2], [30.0, 31.0, 32.0])
        if int(revision) >= 5:
            from torchyard.workspace.models import ModelRegistry

            record = ModelRegistry(store, None).get("digits", alias="prod")  # type: ignore[arg-type]
            assert (record.version, record.file_name, record.tags) == (1, "model.pt", {"stage": "dev"})
        # and the upgraded store takes new values
        store.ingest_batch("plain_1", 0, [("loss", [0.5], [3], [33.0])], [], {"after": "upgrade"}, {})
        before = [3.0, 2.0, 1.0] if int(revision) >= 2 else []
        assert store.get_series("plain_1")[(0, "loss")][0] == [*before, 0.5]
        from torchyard.runtime.summary import metrics_by_rank

        shaped = metrics_by_rank(store, "plain_1")[0]
        assert shaped["acc"] == 0.5 and shaped["note"] == "hello" and shaped["loss"] == ([*before, 0.5] if before else 0.5)
    finally:
        store.dispose()
