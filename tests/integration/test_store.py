"""The metadata store against both backends: SQLite (WAL) and a real throwaway PostgreSQL 15 server."""

from __future__ import annotations

import json
import multiprocessing
import threading
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

import torchyard.workspace.store as store_module
from torchyard.errors import NotFoundError, WorkspaceError
from torchyard.status import RunStatus
from torchyard.workspace.schema import SCHEMA_REVISION, metadata
from torchyard.workspace.store import Store

MIGRATIONS = Path(store_module.__file__).resolve().parent / "migrations"
BACKENDS = ["sqlite", "postgresql"]


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, lock_dir) of a fresh, empty database of the requested backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db", str(tmp_path)
        return
    admin_url = request.getfixturevalue("pg_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        yield admin_url.rsplit("/", 1)[0] + f"/{name}", None
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture
def store(db: tuple[str, str | None]) -> Iterator[Store]:
    url, lock_dir = db
    opened = Store(url, lock_dir=lock_dir)
    try:
        yield opened
    finally:
        opened.dispose()


def _new_run(store: Store, run_id: str, experiment: str = "exp", **kwargs) -> None:
    store.create_run(
        run_id=run_id,
        experiment=experiment,
        spec_json=json.dumps({"command": "python train.py", "id": run_id}),
        compute_target=kwargs.pop("compute_target", "local"),
        run_dir=f"/runs/{run_id}",
        tags=kwargs.pop("tags", {}),
        **kwargs,
    )


# ---- schema and migrations ------------------------------------------------------------------------


def test_schema_revision_is_the_migrations_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    assert script.get_heads() == [SCHEMA_REVISION]
    assert script.get_current_head() == SCHEMA_REVISION


def test_migrations_create_the_schema(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            SCHEMA_REVISION
        ]
        assert head == SCHEMA_REVISION
        tables = set(inspect(conn).get_table_names())
        assert set(metadata.tables) | {"alembic_version"} <= tables
        for table in metadata.tables.values():
            assert {c["name"] for c in inspect(conn).get_columns(table.name)} == set(table.columns.keys())
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("metrics")}
        assert "ix_metrics_run_name" in indexes
        # what the migrations built is what schema.py declares (no drift between the two)
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_opening_twice_is_a_no_op(
    store: Store, db: tuple[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    _new_run(store, "r1")
    import alembic.command

    def _no_upgrade(*_a, **_k):
        raise AssertionError("the schema is current: opening again must not migrate")

    monkeypatch.setattr(alembic.command, "upgrade", _no_upgrade)
    url, lock_dir = db
    again = Store(url, lock_dir=lock_dir)
    try:
        with again.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                SCHEMA_REVISION
            ]
        assert again.get_run("r1")["experiment"] == "exp"
        _new_run(again, "r2")
        assert {r["id"] for r in store.list_runs()} == {"r1", "r2"}
    finally:
        again.dispose()


# ---- runs -----------------------------------------------------------------------------------------


def test_create_get_and_list_runs(store: Store) -> None:
    _new_run(store, "r00", "alpha", tags={"team": "a"}, display_name="first", compute_target="cpu")
    for i in range(1, 6):
        _new_run(store, f"r{i:02d}", "alpha" if i % 2 else "beta", parent_id="r00" if i <= 2 else None)

    run = store.get_run("r00")
    assert run["id"] == "r00"
    assert run["experiment"] == "alpha"
    assert run["status"] == RunStatus.NOT_STARTED.value
    assert run["display_name"] == "first"
    assert run["compute_target"] == "cpu"
    assert json.loads(run["spec"]) == {"command": "python train.py", "id": "r00"}
    assert json.loads(run["details"]) == {}
    assert run["run_dir"] == "/runs/r00"
    assert run["started_at"] is None and run["ended_at"] is None and run["exit_code"] is None
    assert isinstance(run["created_at"], float)
    assert store.get_status("r00") == "NotStarted"
    assert store.get_tags("r00") == {"team": "a"}
    assert store.status_history("r00")[0]["status"] == "NotStarted"
    assert store.list_experiments() == ["alpha", "beta"]

    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert ids(store.list_runs()) == ["r05", "r04", "r03", "r02", "r01", "r00"]  # newest first
    assert ids(store.list_runs(experiment="alpha")) == ["r05", "r03", "r01", "r00"]
    assert ids(store.list_runs(experiment="beta")) == ["r04", "r02"]
    assert ids(store.list_runs(experiment="nope")) == []
    assert ids(store.list_runs(limit=2)) == ["r05", "r04"]
    assert ids(store.list_runs(experiment="alpha", limit=3)) == ["r05", "r03", "r01"]
    assert ids(store.list_runs(parent_id="r00")) == ["r02", "r01"]

    assert store.set_status("r03", RunStatus.RUNNING)
    assert store.set_status("r04", RunStatus.RUNNING)
    assert store.set_status("r04", RunStatus.COMPLETED)
    assert ids(store.list_runs(status="Running")) == ["r03"]
    assert ids(store.list_runs(status="Completed")) == ["r04"]
    assert ids(store.list_runs(status="NotStarted", experiment="alpha", limit=2)) == ["r05", "r01"]


def test_duplicate_run_id_is_rejected_and_changes_nothing(store: Store) -> None:
    _new_run(store, "dup", "one")
    with pytest.raises(Exception):  # noqa: B017 - the store does not wrap this (an IntegrityError)
        _new_run(store, "dup", "two", tags={"k": "v"})
    assert store.get_run("dup")["experiment"] == "one"
    assert store.list_experiments() == ["one"]  # the failed transaction rolled back entirely
    assert store.get_tags("dup") == {}
    assert len(store.status_history("dup")) == 1


def test_status_history_and_terminal_statuses(store: Store) -> None:
    _new_run(store, "r1")
    assert store.set_status("r1", RunStatus.QUEUED, "waiting for a slot")
    assert store.set_status("r1", RunStatus.STARTING)
    assert store.set_status("r1", RunStatus.RUNNING, details={"pid": 123})
    started = store.get_run("r1")["started_at"]
    assert started is not None
    assert store.set_status("r1", RunStatus.RUNNING) is False  # same status: no new event
    assert store.set_status("r1", RunStatus.NOT_RESPONDING)
    assert store.set_status("r1", RunStatus.RUNNING, details={"host": "h1"})
    assert store.get_run("r1")["started_at"] == started  # the first start is kept
    assert store.set_status("r1", RunStatus.FAILED, "exit code 3", exit_code=3)

    run = store.get_run("r1")
    assert run["status"] == "Failed"
    assert run["exit_code"] == 3
    assert run["ended_at"] is not None and run["ended_at"] >= started
    assert json.loads(run["details"]) == {"pid": 123, "host": "h1"}

    history = store.status_history("r1")
    assert [h["status"] for h in history] == [
        "NotStarted", "Queued", "Starting", "Running", "NotResponding", "Running", "Failed",
    ]  # fmt: skip
    assert history[1]["detail"] == "waiting for a slot"
    assert history[-1]["detail"] == "exit code 3"
    times = [h["time"] for h in history]
    assert times == sorted(times)

    # terminal: never moves again, whatever is asked, and nothing else is touched
    ended = run["ended_at"]
    for status in (RunStatus.COMPLETED, RunStatus.CANCELED, RunStatus.RUNNING, RunStatus.FAILED):
        assert store.set_status("r1", status, details={"late": True}, exit_code=0) is False
    run = store.get_run("r1")
    assert (run["status"], run["exit_code"], run["ended_at"]) == ("Failed", 3, ended)
    assert "late" not in json.loads(run["details"])
    assert len(store.status_history("r1")) == len(history)

    _new_run(store, "r2")
    assert store.set_status("r2", RunStatus.CANCELED)  # straight from NotStarted
    assert store.set_status("r2", RunStatus.COMPLETED) is False
    assert store.get_status("r2") == "Canceled"


def test_unless_is_honoured(store: Store) -> None:
    _new_run(store, "r1")
    assert store.set_status("r1", RunStatus.CANCEL_REQUESTED)
    # e.g. a supervisor must not flip a cancel request back to Running
    assert store.set_status("r1", RunStatus.RUNNING, unless=[RunStatus.CANCEL_REQUESTED]) is False
    assert store.get_status("r1") == "CancelRequested"
    assert store.get_run("r1")["started_at"] is None
    # `unless` only blocks the statuses it names
    assert store.set_status("r1", RunStatus.CANCELED, unless=[RunStatus.QUEUED, RunStatus.RUNNING])
    assert [h["status"] for h in store.status_history("r1")] == ["NotStarted", "CancelRequested", "Canceled"]


def test_update_details_and_supervisor(store: Store) -> None:
    _new_run(store, "r1")
    store.update_details("r1", a=1)
    store.update_details("r1", b=[1, 2], a=2)
    assert json.loads(store.get_run("r1")["details"]) == {"a": 2, "b": [1, 2]}
    store.set_supervisor("r1", 4242)
    run = store.get_run("r1")
    assert run["supervisor_pid"] == 4242 and run["supervisor_host"] and run["heartbeat_at"] is not None
    assert store.heartbeat("r1") == "NotStarted"
    assert store.get_run("r1")["heartbeat_at"] >= run["heartbeat_at"]


# ---- tags and properties ----------------------------------------------------------------------------


def test_tags_upsert(store: Store) -> None:
    _new_run(store, "r1", tags={"a": "1", "b": "2"})
    _new_run(store, "r2", tags={"a": "other"})
    store.set_tags("r1", {"b": "20", "c": "3"})
    store.set_tags("r1", {})
    store.set_tags("r1", {"c": "30"})
    assert store.get_tags("r1") == {"a": "1", "b": "20", "c": "30"}
    assert store.get_tags("r2") == {"a": "other"}
    assert store.get_tags("missing") == {}


def test_properties_are_immutable(store: Store) -> None:
    _new_run(store, "r1")
    _new_run(store, "r2")
    store.add_properties("r1", {"commit": "abc", "data": "v1"})
    store.add_properties("r1", {"commit": "abc"})  # the same value again is fine
    store.add_properties("r1", {"commit": "abc", "extra": "x"})
    store.add_properties("r1", {})
    store.add_properties("r2", {"commit": "def"})
    with pytest.raises(WorkspaceError, match="immutable") as err:
        store.add_properties("r1", {"extra2": "y", "commit": "xyz"})
    assert err.value.run_id == "r1"
    # the failed call added nothing, not even the keys before the bad one
    assert store.get_properties("r1") == {"commit": "abc", "data": "v1", "extra": "x"}
    assert store.get_properties("r2") == {"commit": "def"}


# ---- metrics ----------------------------------------------------------------------------------------


def test_bulk_metrics_in_insertion_order(store: Store) -> None:
    _new_run(store, "r1")
    _new_run(store, "r2")
    n = 100_000
    rows = []
    for i in range(n):
        rank = i % 4
        if i % 10 == 9:  # a payload row (a logged list), no scalar value
            rows.append(("lst", rank, i, None, json.dumps([i, i + 1]), 1, 1000.0 + i / 7))
        elif i % 10 == 8:  # a scalar logged without a step
            rows.append(("final", rank, None, i * 0.5, None, 0, 1000.0 + i / 7))
        else:
            rows.append(("loss", rank, i, 1.0 / (i + 1), None, 0, 1000.0 + i / 7))
    store.insert_metrics("r1", rows[: n // 2])
    store.insert_metrics("r1", rows[n // 2 :])
    store.insert_metrics("r1", [])
    store.insert_metrics("r2", [("loss", 0, 0, 0.25, None, 0, 1.5)])

    assert store.metric_count("r1") == n
    assert store.metric_count("r2") == 1
    assert store.metric_count("missing") == 0

    everything = store.get_metric_rows("r1", rank=None)
    assert len(everything) == n
    assert everything == [tuple(r) for r in rows]  # insertion order, values round-trip exactly

    rank0 = store.get_metric_rows("r1")  # rank defaults to 0
    assert rank0 == [r for r in rows if r[1] == 0]
    loss3 = store.get_metric_rows("r1", rank=3, name="loss")
    assert loss3 == [r for r in rows if r[1] == 3 and r[0] == "loss"]
    final = store.get_metric_rows("r1", rank=None, name="final")
    assert len(final) == n // 10 and all(r[2] is None and r[4] is None for r in final)
    lst = store.get_metric_rows("r1", rank=1, name="lst")
    assert lst and all(r[3] is None and r[5] == 1 and json.loads(r[4]) == [r[2], r[2] + 1] for r in lst)
    assert store.get_metric_rows("r1", name="nope") == []
    assert store.get_metric_rows("r2") == [("loss", 0, 0, 0.25, None, 0, 1.5)]


def test_packed_series_round_trip(store: Store) -> None:
    _new_run(store, "r1")
    n = 300_000
    values = [i * 0.5 for i in range(n)]
    steps: list[int | None] = [i if i % 3 else None for i in range(n)]
    ts = [1_700_000_000.0 + i for i in range(n)]
    half = n // 2
    store.insert_series("r1", 0, [("loss", values[:half], steps[:half], ts[:half]), ("acc", [0.9], [7], [1.0])])
    store.insert_series("r1", 0, [("loss", values[half:], steps[half:], ts[half:]), ("empty", [], [], [])])
    store.insert_series("r1", 1, [("loss", [2.0, 3.0], [None, -5], [1.0, 2.0])])
    store.insert_metrics("r1", [("lst", 0, None, None, "[1, 2]", 1, 3.0)])
    assert store.metric_count("r1") == n + 1 + 2 + 1
    series = store.get_series("r1")
    assert set(series) == {(0, "loss"), (0, "acc")}
    assert series[(0, "loss")] == (values, steps, ts)
    assert store.get_series("r1", rank=1)[(1, "loss")] == ([2.0, 3.0], [None, -5], [1.0, 2.0])
    assert set(store.get_series("r1", rank=None, name="loss")) == {(0, "loss"), (1, "loss")}
    assert store.get_series("missing") == {}


def test_metrics_with_awkward_text(store: Store) -> None:
    """COPY's text format must escape tabs, newlines, backslashes and non-ASCII; NULL stays NULL."""
    _new_run(store, "r1")
    rows = [
        ("a\tb", 0, 1, None, json.dumps({"s": "line1\nline2\\N\t\u00e9\u2603"}), 3, 1.0),
        ("\\N", 0, 2, float("inf"), "\\N", 5, 2.0),
        ("nulls", 0, None, None, None, 5, 3.0),
        ("neg", 0, -1, -0.0, "", 5, 4.0),
    ]
    store.insert_metrics("r1", rows)
    assert store.get_metric_rows("r1") == rows


# ---- unknown ids ------------------------------------------------------------------------------------


def test_unknown_run_ids_raise_not_found(store: Store) -> None:
    _new_run(store, "known")
    for call in (
        lambda: store.get_run("nope"),
        lambda: store.get_status("nope"),
        lambda: store.set_status("nope", RunStatus.RUNNING),
        lambda: store.update_details("nope", a=1),
    ):
        with pytest.raises(NotFoundError) as err:
            call()
        assert err.value.run_id == "nope"
        assert isinstance(err.value, LookupError) and isinstance(err.value, WorkspaceError)
    assert store.status_history("nope") == []
    assert store.get_status("known") == "NotStarted"


def test_heartbeat_unknown_run_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.heartbeat("nope")


# ---- several processes at once ----------------------------------------------------------------------

WORKERS = 8
RUNS_PER_WORKER = 10
METRICS_PER_WORKER = 1_000


def _worker(url: str, lock_dir: str | None, wid: int, barrier, results) -> None:
    """One process: open the store, create runs, log metrics, move statuses, all as fast as it can."""
    try:
        barrier.wait(timeout=60)  # start together, so the writers really contend
        store = Store(url, lock_dir=lock_dir)
        try:
            per_run = METRICS_PER_WORKER // RUNS_PER_WORKER
            for j in range(RUNS_PER_WORKER):
                run_id = f"w{wid}-r{j}"
                _new_run(store, run_id, "shared" if j % 2 else f"exp-{wid}", tags={"worker": str(wid)})
                store.set_status(run_id, RunStatus.RUNNING)
                store.insert_metrics(
                    run_id, [("loss", wid, k, float(k), None, 0, float(k)) for k in range(per_run)]
                )
                store.set_tags(run_id, {"j": str(j)})
                store.set_status(run_id, RunStatus.COMPLETED)
                store.list_runs(limit=5)  # readers interleaved with the writers
            results.put((wid, None))
        finally:
            store.dispose()
    except BaseException:
        results.put((wid, traceback.format_exc()))


def test_concurrent_processes(store: Store, db: tuple[str, str | None]) -> None:
    """The "database is locked" check: 8 processes write to one store at once, none fails."""
    _new_run(store, "seed", "shared")  # an existing experiment that every worker also writes to
    url, lock_dir = db
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, lock_dir, w, barrier, results)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        outcome = dict(results.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # pragma: no cover - only when something hangs
                p.kill()
                p.join()
        results.close()
        results.join_thread()
    errors = {w: tb for w, tb in outcome.items() if tb}
    assert not errors, "\n".join(f"worker {w}:\n{tb}" for w, tb in errors.items())
    assert [p.exitcode for p in procs] == [0] * WORKERS

    runs = [r for r in store.list_runs() if r["id"] != "seed"]
    ids = [r["id"] for r in runs]
    assert len(ids) == WORKERS * RUNS_PER_WORKER == len(set(ids))
    assert set(ids) == {f"w{w}-r{j}" for w in range(WORKERS) for j in range(RUNS_PER_WORKER)}
    assert all(r["status"] == "Completed" for r in runs)
    assert sum(store.metric_count(i) for i in ids) == WORKERS * METRICS_PER_WORKER
    with store.read_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM metrics")).scalar() == WORKERS * METRICS_PER_WORKER
        assert conn.execute(text("SELECT count(*) FROM status_events")).scalar() == 1 + 3 * len(ids)
    assert set(store.list_experiments()) == {"shared"} | {f"exp-{w}" for w in range(WORKERS)}
    assert len(store.list_runs(experiment="shared")) == 1 + WORKERS * RUNS_PER_WORKER // 2
    for w in (0, WORKERS - 1):
        assert store.get_metric_rows(f"w{w}-r3", rank=w) == [
            ("loss", w, k, float(k), None, 0, float(k)) for k in range(METRICS_PER_WORKER // RUNS_PER_WORKER)
        ]
        assert store.get_tags(f"w{w}-r3") == {"worker": str(w), "j": "3"}


# ---- races between two writers, made deterministic ------------------------------------------------------
# Another writer has done its statements but not committed yet; the store's call starts meanwhile. On
# SQLite ``BEGIN IMMEDIATE`` makes the store wait for that commit and then see it; on PostgreSQL (read
# committed) the store relies on row locks and ON CONFLICT, which these tests pin down.

RACE_BACKENDS = ["sqlite", "postgresql"]


def _while_another_writer_is_open(url: str, statements: list[str], action):
    """Run ``action`` in a thread while another connection holds uncommitted ``statements``; commit them
    after a second; return (result, exception) of the action."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = action()
        except BaseException as exc:
            outcome["error"] = exc

    other = create_engine(url)
    try:
        with other.connect() as conn:
            for sql in statements:
                conn.execute(text(sql))
            thread = threading.Thread(target=target)
            thread.start()
            thread.join(timeout=0.5)  # it blocks on the other writer's lock (or races past it)
            conn.commit()
            thread.join(timeout=60)
            assert not thread.is_alive()
    finally:
        other.dispose()
    return outcome.get("result"), outcome.get("error")


@pytest.mark.parametrize("db", RACE_BACKENDS, indirect=True)
def test_race_first_runs_of_a_new_experiment(store: Store, db: tuple[str, str | None]) -> None:
    """Two processes create the first runs of one new experiment at the same time."""
    _, error = _while_another_writer_is_open(
        db[0],
        ["INSERT INTO experiments (name, created_at) VALUES ('fresh', 0)"],
        lambda: _new_run(store, "mine", "fresh"),
    )
    assert error is None, f"create_run failed: {error!r}"
    assert store.get_run("mine")["experiment"] == "fresh"
    assert store.list_experiments() == ["fresh"]


@pytest.mark.parametrize("db", RACE_BACKENDS, indirect=True)
def test_race_terminal_status_is_final(store: Store, db: tuple[str, str | None]) -> None:
    """A run completes (another process) while this one marks it failed: the first terminal status wins."""
    _new_run(store, "r1")
    assert store.set_status("r1", RunStatus.RUNNING)
    moved, error = _while_another_writer_is_open(
        db[0],
        [
            "UPDATE runs SET status = 'Completed', ended_at = 1 WHERE id = 'r1'",
            "INSERT INTO status_events (run_id, status, ts) VALUES ('r1', 'Completed', 1)",
        ],
        lambda: store.set_status("r1", RunStatus.FAILED, "lost the race"),
    )
    assert error is None, repr(error)
    assert moved is False
    assert store.get_status("r1") == "Completed"
    assert [h["status"] for h in store.status_history("r1")] == ["NotStarted", "Running", "Completed"]


@pytest.mark.parametrize("db", RACE_BACKENDS, indirect=True)
def test_race_tag_upsert(store: Store, db: tuple[str, str | None]) -> None:
    """Two processes set the same new tag at once: the later write wins, neither fails."""
    _new_run(store, "r1")
    _, error = _while_another_writer_is_open(
        db[0],
        ["INSERT INTO run_tags (run_id, key, value) VALUES ('r1', 'k', 'theirs')"],
        lambda: store.set_tags("r1", {"k": "mine"}),
    )
    assert error is None, f"set_tags failed: {error!r}"
    assert store.get_tags("r1") == {"k": "mine"}


def test_a_whole_run_on_postgresql(pg_url: str, tmp_path: Path, src: Path) -> None:
    """The same code path as SQLite, end to end: submit, supervise, ingest, read back."""

    from torchyard import Experiment, ScriptRunConfig, Workspace

    name = f"run_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    ws = Workspace(path=tmp_path / ".torchyard", db_url=pg_url.rsplit("/", 1)[0] + "/" + name)
    try:
        run = Experiment(ws, "pg").submit(ScriptRunConfig(str(src), script="ok.py"))
        assert run.wait_for_completion(timeout=120)["status"] == "Completed"
        assert run.get_metrics()["loss"] == [1.0, 0.5, 1 / 3]
        assert run.get_tags()["phase"] == "done"
        assert Workspace(path=tmp_path / ".torchyard").db_url.endswith(name)  # remembered by the workspace
    finally:
        ws.store.dispose()
