"""The metadata store: runs, statuses, tags, properties and metrics, on SQLite or PostgreSQL.

SQLite runs in WAL mode; every write transaction starts with ``BEGIN IMMEDIATE`` (so two writers never
deadlock on a lock upgrade) and waits on a busy timeout; reads use a second engine in autocommit, so
readers never block writers. PostgreSQL needs nothing special. Metrics take a bulk path
(executemany on SQLite, COPY on PostgreSQL) because a run may log millions of values.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from torchyard.errors import NotFoundError, WorkspaceError
from torchyard.status import ACTIVE_VALUES, TERMINAL_VALUES, RunKind, RunStatus
from torchyard.workspace.schema import (
    NO_STEP,
    SCHEMA_REVISION,
    experiments,
    ingest_offsets,
    metric_chunks,
    metrics,
    run_properties,
    run_tags,
    runs,
    status_events,
)

Series = tuple[str, list[float], list[int | None], list[float]]
"""(name, values, steps, wall times) of one scalar metric."""

MetricRow = tuple[str, int, int | None, float | None, str | None, int, float]
"""(name, rank, step, value, payload_json, kind, ts)"""

METRIC_KINDS = {0: "scalar", 1: "list", 2: "row", 3: "table", 4: "image", 5: "string"}
HOSTNAME = socket.gethostname()


def _now() -> float:
    return time.time()



def dialect_insert(engine: Any, table: Any) -> Any:
    """An INSERT of ``engine``'s dialect (SQLite or PostgreSQL), which has ``on_conflict_do_*``."""
    return (sqlite_insert if engine.dialect.name == "sqlite" else pg_insert)(table)

class Store:
    """All reads and writes of run metadata. One per process; safe to share between threads."""

    def __init__(self, url: str, lock_dir: str | None = None) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        #: the workspace folder: run folders are stored relative to it
        self.workspace_dir = os.path.abspath(lock_dir) if lock_dir else None
        self.read_only = False
        try:
            if self.is_sqlite:
                path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
                if path and path != ":memory:":
                    _check_sqlite_file(path)
                    self.read_only = os.path.exists(path) and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)
                if self.read_only:  # a read-only mount: read the file as it is (nobody can write it there)
                    ro = f"sqlite:///file:{os.path.abspath(path)}?mode=ro&immutable=1&uri=true"
                    self.engine = self._sqlite_engine(ro, write=True)
                    self.read_engine = self._sqlite_engine(ro, write=False)
                else:
                    self.engine = self._sqlite_engine(url, write=True)
                    self.read_engine = self._sqlite_engine(url, write=False)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
                self.read_engine = self.engine
            self._migrate(lock_dir)
        except SQLAlchemyError as err:
            raise WorkspaceError(f"cannot open the workspace store at {_safe_url(url)}: {_one_line(err)}") from None

    # ---- engines and migrations ---------------------------------------------------------------

    @staticmethod
    def _sqlite_engine(url: str, write: bool) -> Engine:
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        if write:

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _migrate(self, lock_dir: str | None) -> None:
        if self._revision() == SCHEMA_REVISION:
            return
        if self.read_only:
            raise WorkspaceError(f"the workspace store {_safe_url(self.url)} is read-only and has schema revision "
                                 f"{self._revision()!r}, not {SCHEMA_REVISION!r}: open it once where it is writable "
                                 "to upgrade it")
        with self._migration_lock(lock_dir):
            if self._revision() == SCHEMA_REVISION:
                return
            from alembic import command  # noqa: PLC0415
            from alembic.config import Config  # noqa: PLC0415 - only when the schema must change

            cfg = Config()
            cfg.set_main_option("script_location", os.path.join(os.path.dirname(__file__), "migrations"))
            if self.is_sqlite:
                with self.read_engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")

    def _revision(self) -> str | None:
        try:
            with self.read_engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, SQLAlchemyError):
            return None

    @contextmanager
    def _migration_lock(self, lock_dir: str | None) -> Iterator[None]:
        if self.is_sqlite and lock_dir:
            with open(os.path.join(lock_dir, ".migrate.lock"), "w") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        elif not self.is_sqlite:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(7403221)"))
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(7403221)"))
                    conn.commit()
        else:
            yield

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.engine, table)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

    # ---- runs -----------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        run_id: str,
        experiment: str,
        spec_json: str,
        compute_target: str,
        run_dir: str,
        tags: dict[str, str],
        display_name: str | None = None,
        parent_id: str | None = None,
        properties: dict[str, str] | None = None,
        queued: bool = False,
        kind: str = "run",
        created_by: str | None = None,
    ) -> None:
        """Record a new run, NotStarted (or, with ``queued``, NotStarted then Queued in the same
        transaction, so that no reader ever sees a recorded run nobody will start)."""
        now = _now()
        if self.workspace_dir and os.path.isabs(run_dir) and \
                os.path.commonpath([self.workspace_dir, run_dir]) == self.workspace_dir:
            run_dir = os.path.relpath(run_dir, self.workspace_dir)
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(experiments)
                .values(name=experiment, created_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            conn.execute(
                insert(runs).values(
                    id=run_id,
                    experiment=experiment,
                    parent_id=parent_id,
                    kind=RunKind(kind).value,
                    status=(RunStatus.QUEUED if queued else RunStatus.NOT_STARTED).value,
                    display_name=display_name,
                    compute_target=compute_target,
                    created_at=now,
                    spec=spec_json,
                    details="{}",
                    run_dir=run_dir,
                    # a sweep's trial is its parent's creator's (the team server's user; revision 0006)
                    created_by=created_by if created_by is not None or not parent_id else
                    select(runs.c.created_by).where(runs.c.id == parent_id).scalar_subquery(),
                )
            )
            conn.execute(insert(status_events).values(run_id=run_id, status=RunStatus.NOT_STARTED.value, ts=now))
            if queued:
                conn.execute(insert(status_events).values(run_id=run_id, status=RunStatus.QUEUED.value, ts=now))
            if tags:
                conn.execute(insert(run_tags), [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()])
            if properties:
                conn.execute(
                    insert(run_properties), [{"run_id": run_id, "key": k, "value": v} for k, v in properties.items()]
                )

    def set_status(
        self,
        run_id: str,
        status: RunStatus,
        detail: str | None = None,
        *,
        unless: Iterable[RunStatus] = (),
        details: dict[str, Any] | None = None,
        exit_code: int | None = None,
    ) -> bool:
        """Move a run to ``status`` unless it is terminal (or in ``unless``). Returns whether it moved."""
        now = _now()
        blocked = set(TERMINAL_VALUES) | {s.value for s in unless}
        values: dict[str, Any] = {"status": status.value}
        if status is RunStatus.RUNNING:
            values["started_at"] = func.coalesce(runs.c.started_at, now)
        if status.is_terminal:
            values["ended_at"] = now
        if exit_code is not None:
            values["exit_code"] = exit_code
        with self.engine.begin() as conn:
            row = conn.execute(
                select(runs.c.status, runs.c.details).where(runs.c.id == run_id).with_for_update()
            ).first()
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in this workspace", run_id=run_id)
            if row.status in blocked or row.status == status.value:
                return False
            if details:
                merged = json.loads(row.details or "{}")
                merged.update(details)
                values["details"] = json.dumps(merged)
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            conn.execute(insert(status_events).values(run_id=run_id, status=status.value, ts=now, detail=detail))
        return True

    def update_details(self, run_id: str, **details: Any) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(select(runs.c.details).where(runs.c.id == run_id).with_for_update()).first()
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in this workspace", run_id=run_id)
            merged = json.loads(row.details or "{}")
            merged.update(details)
            conn.execute(update(runs).where(runs.c.id == run_id).values(details=json.dumps(merged)))

    def set_supervisor(self, run_id: str, pid: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(supervisor_pid=pid, supervisor_host=HOSTNAME, heartbeat_at=_now())
            )

    def claim_supervisor(self, run_id: str, gone: int) -> bool:
        """Whether this caller may start the supervisor that replaces ``gone`` (the dead one's pid):
        exactly one caller gets True (the pid moves to -1, "being replaced", with a fresh heartbeat,
        until the new one records its own)."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.supervisor_pid == gone, runs.c.status.in_(ACTIVE_VALUES))
                .values(supervisor_pid=-1, supervisor_host=HOSTNAME, heartbeat_at=_now())
            ).rowcount
        return bool(moved)

    def heartbeat(self, run_id: str, pid: int | None = None) -> RunStatus:
        """Record that the supervisor is alive; returns the run's current status. With ``pid`` (the
        supervisor's own), the run's supervisor is that process again: a replacement started by a
        reader that took a live supervisor for dead (and found the run lock taken) is undone."""
        values: dict[str, Any] = {"heartbeat_at": _now()}
        if pid is not None:
            values.update(supervisor_pid=pid, supervisor_host=HOSTNAME)
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
        if status is None:
            raise NotFoundError(f"no run {run_id!r} in this workspace", run_id=run_id)
        return RunStatus(status)

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self.read_engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        if row is None:
            raise NotFoundError(
                f"no run {run_id!r} in this workspace; `torchyard runs list` shows the runs", run_id=run_id
            )
        return _typed(row, self.workspace_dir)

    def get_status(self, run_id: str) -> RunStatus:
        with self.read_engine.connect() as conn:
            status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
        if status is None:
            raise NotFoundError(f"no run {run_id!r} in this workspace", run_id=run_id)
        return RunStatus(status)

    def list_runs(
        self,
        experiment: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        parent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        query = select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc())
        if experiment is not None:
            query = query.where(runs.c.experiment == experiment)
        if status is not None:
            query = query.where(runs.c.status == status)
        if parent_id is not None:
            query = query.where(runs.c.parent_id == parent_id)
        if limit is not None:
            query = query.limit(limit)
        with self.read_engine.connect() as conn:
            return [_typed(r, self.workspace_dir) for r in conn.execute(query).mappings()]

    def list_experiments(self) -> list[str]:
        with self.read_engine.connect() as conn:
            return [r[0] for r in conn.execute(select(experiments.c.name).order_by(experiments.c.name))]

    def status_history(self, run_id: str) -> list[dict[str, Any]]:
        query = select(status_events).where(status_events.c.run_id == run_id).order_by(status_events.c.id)
        with self.read_engine.connect() as conn:
            return [
                {"status": r.status, "time": r.ts, "detail": r.detail}
                for r in conn.execute(query)
            ]

    def cancel_reason(self, run_id: str) -> str | None:
        """The detail of the run's latest CancelRequested (the reason given to ``Run.cancel``)."""
        query = (
            select(status_events.c.detail)
            .where(status_events.c.run_id == run_id, status_events.c.status == RunStatus.CANCEL_REQUESTED.value)
            .order_by(status_events.c.id.desc())
            .limit(1)
        )
        with self.read_engine.connect() as conn:
            detail = conn.execute(query).scalar()
        return None if detail is None else str(detail)

    # ---- tags and properties --------------------------------------------------------------------

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        if not tags:
            return
        with self.engine.begin() as conn:
            stmt = self._insert(run_tags)
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["run_id", "key"], set_={"value": stmt.excluded.value}),
                [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
            )

    def get_tags(self, run_id: str) -> dict[str, str]:
        with self.read_engine.connect() as conn:
            return {r.key: r.value for r in conn.execute(select(run_tags).where(run_tags.c.run_id == run_id))}

    def add_properties(self, run_id: str, props: dict[str, str]) -> None:
        """Properties are immutable: re-adding a key with a different value is an error."""
        if not props:
            return
        with self.engine.begin() as conn:
            current = {
                r.key: r.value
                for r in conn.execute(select(run_properties).where(run_properties.c.run_id == run_id))
            }
            for key, value in props.items():
                if key in current:
                    if current[key] != value:
                        raise WorkspaceError(
                            f"property {key!r} of run {run_id} is already {current[key]!r}; properties are "
                            "immutable (use tags for values that change)",
                            run_id=run_id,
                        )
                    continue
                try:
                    conn.execute(insert(run_properties).values(run_id=run_id, key=key, value=value))
                except IntegrityError:  # pragma: no cover - raced with another writer
                    raise WorkspaceError(f"property {key!r} of run {run_id} was set concurrently") from None

    def get_properties(self, run_id: str) -> dict[str, str]:
        with self.read_engine.connect() as conn:
            return {
                r.key: r.value
                for r in conn.execute(select(run_properties).where(run_properties.c.run_id == run_id))
            }

    # ---- metrics --------------------------------------------------------------------------------

    def insert_metrics(self, run_id: str, rows: Sequence[MetricRow]) -> None:
        """Bulk insert of (name, rank, step, value, payload, kind, ts) rows."""
        if not rows:
            return
        with self.engine.begin() as conn:
            self._insert_metric_rows(conn, run_id, rows)

    def _insert_metric_rows(self, conn: Connection, run_id: str, rows: Sequence[MetricRow]) -> None:
        cols = "run_id, name, rank, step, value, payload, kind, ts"
        if self.is_sqlite:
            conn.exec_driver_sql(
                f"INSERT INTO metrics ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *r) for r in rows],
            )
        elif self.url.startswith("postgresql+psycopg") or self.url.startswith("postgresql:"):
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur, cur.copy(f"COPY metrics ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((run_id, *r))
        else:  # pragma: no cover - other drivers
            conn.execute(
                insert(metrics),
                [dict(zip(("name", "rank", "step", "value", "payload", "kind", "ts"), r, strict=True), run_id=run_id)
                 for r in rows],
            )

    def insert_series(self, run_id: str, rank: int, series: Sequence[Series]) -> None:
        """Store chunks of scalar series packed as arrays (one row per metric per call)."""
        rows = _chunk_rows(run_id, rank, series)
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(metric_chunks), rows)

    def ingest_batch(self, run_id: str, rank: int, series: Sequence[Series], rows: Sequence[MetricRow],
                     tags: dict[str, str], properties: dict[str, str], *, journal: str | None = None,
                     offset: int | None = None, replace_from: dict[str, int] | None = None) -> list[str]:
        """One rank's newly journaled values, all or nothing in one transaction (so a journal offset
        moves on only once the store has every value of the batch). With ``journal`` and ``offset``,
        the journal's stored offset moves to ``offset`` in the same transaction, with rank 0's
        summary. With ``replace_from`` (metric name → step: a resumed attempt's first step of each
        metric), the values stored for those metrics at that step or later (the lost attempt's, past
        the checkpoint it resumed from) are dropped first, so the new ones replace them. A property
        re-set to another value is left out and named in the returned list; the rest of the batch is
        stored."""
        from torchyard.workspace.summary import rebuild_summary, update_summary  # noqa: PLC0415

        chunks = _chunk_rows(run_id, rank, series)
        refused: list[str] = []
        with self.engine.begin() as conn:
            for name, first in (replace_from or {}).items():
                _drop_steps_from(conn, run_id, rank, name, first)
            if journal is not None and offset is not None:
                stmt = self._insert(ingest_offsets)
                conn.execute(stmt.on_conflict_do_update(index_elements=["run_id", "journal"],
                                                        set_={"offset": stmt.excluded.offset}),
                             [{"run_id": run_id, "journal": journal, "offset": offset}])
            if replace_from and rank == 0:
                if chunks:
                    conn.execute(insert(metric_chunks), chunks)
                    chunks = []
                rebuild_summary(conn, run_id)
            elif series:
                update_summary(conn, run_id, rank, series)
            if chunks:
                conn.execute(insert(metric_chunks), chunks)
            if rows:
                self._insert_metric_rows(conn, run_id, rows)
            if tags:
                stmt = self._insert(run_tags)
                conn.execute(
                    stmt.on_conflict_do_update(index_elements=["run_id", "key"], set_={"value": stmt.excluded.value}),
                    [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
                )
            if properties:
                current = {r.key: r.value for r in
                           conn.execute(select(run_properties).where(run_properties.c.run_id == run_id))}
                for key, value in properties.items():
                    if key not in current:
                        conn.execute(insert(run_properties).values(run_id=run_id, key=key, value=value))
                    elif current[key] != value:
                        refused.append(f"property {key!r} of run {run_id} is already {current[key]!r}; properties are "
                                       "immutable (use tags for values that change)")
        return refused

    def ingest_offsets(self, run_id: str) -> dict[str, int]:
        """How far into each of the run's journals (by name under ``journal/``) the store has every value."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(ingest_offsets.c.journal, ingest_offsets.c.offset)
                                .where(ingest_offsets.c.run_id == run_id))
            return {r.journal: int(r.offset) for r in rows}

    def clear_metrics(self, run_id: str) -> None:
        """Remove a run's stored metric values and summary (``runs repair`` then re-reads its journals)."""
        from torchyard.workspace.schema import run_metric_summary  # noqa: PLC0415

        with self.engine.begin() as conn:
            for table in (metric_chunks, metrics, run_metric_summary, ingest_offsets):
                conn.execute(table.delete().where(table.c.run_id == run_id))

    def get_series(
        self, run_id: str, rank: int | None = 0, name: str | None = None
    ) -> dict[tuple[int, str], tuple[list[float], list[int | None], list[float]]]:
        """Scalar series by (rank, name), chunks concatenated in the order they were stored."""
        query = select(
            metric_chunks.c.rank, metric_chunks.c.name, metric_chunks.c.vals, metric_chunks.c.steps, metric_chunks.c.ts
        ).where(metric_chunks.c.run_id == run_id)
        if rank is not None:
            query = query.where(metric_chunks.c.rank == rank)
        if name is not None:
            query = query.where(metric_chunks.c.name == name)
        out: dict[tuple[int, str], tuple[array[float], array[int], array[float]]] = {}
        with self.read_engine.connect() as conn:
            for r_rank, r_name, vals, steps, ts in conn.execute(query.order_by(metric_chunks.c.id)):
                acc = out.get((r_rank, r_name))
                if acc is None:
                    acc = out[(r_rank, r_name)] = (array("d"), array("q"), array("d"))
                acc[0].frombytes(vals)
                acc[1].frombytes(steps)
                acc[2].frombytes(ts)
        return {
            key: (v.tolist(), [None if s == NO_STEP else s for s in st], t.tolist()) for key, (v, st, t) in out.items()
        }

    def get_metric_rows(
        self, run_id: str, rank: int | None = 0, name: str | None = None
    ) -> list[tuple[str, int, int | None, float | None, str | None, int, float]]:
        sql = "SELECT name, rank, step, value, payload, kind, ts FROM metrics WHERE run_id = :run_id"
        params: dict[str, Any] = {"run_id": run_id}
        if rank is not None:
            sql += " AND rank = :rank"
            params["rank"] = rank
        if name is not None:
            sql += " AND name = :name"
            params["name"] = name
        sql += " ORDER BY id"
        with self.read_engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def metric_count(self, run_id: str) -> int:
        """How many values (rows and packed scalars) a run has in the store."""
        with self.read_engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(metrics).where(metrics.c.run_id == run_id)).scalar_one()
            packed = conn.execute(
                select(func.coalesce(func.sum(metric_chunks.c.count), 0)).where(metric_chunks.c.run_id == run_id)
            ).scalar_one()
        return int(rows) + int(packed)


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _check_sqlite_file(path: str) -> None:
    """Refuse an embedded store that exists but is empty or not SQLite, instead of starting a new one
    over it (which would orphan every run folder beside it). A file younger than 10 s may be being
    created by another process at this moment (SQLite makes the file, then writes its first page):
    it gets that long to settle before it is judged."""
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as fh:
                head = fh.read(16)
            young = time.time() - os.path.getmtime(path) < 10
        except FileNotFoundError:
            return
        except OSError as err:
            raise WorkspaceError(f"cannot read the workspace store {path}: {err.strerror}") from None
        wal = path + "-wal"
        pending = os.path.exists(wal) and os.path.getsize(wal) > 0
        empty = size == 0 and not pending and _holds_runs(folder)
        foreign = len(head) == 16 and head != b"SQLite format 3\x00"
        if not (empty or foreign):
            return
        if not young:
            break
        time.sleep(0.05)
    if empty:
        raise WorkspaceError(
            f"the workspace store {path} is empty (0 bytes): it was truncated or never written. Restore it from a "
            f"backup, or move it away (`mv {path} {path}.empty`) to start an empty store beside the existing run folders")
    raise WorkspaceError(
        f"the workspace store {path} is not an SQLite database (it starts with {head[:8]!r}): restore it from a "
        f"backup, or move it away to start an empty store")


def _holds_runs(folder: str) -> bool:
    try:
        with os.scandir(os.path.join(folder, "runs")) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def _drop_steps_from(conn: Connection, run_id: str, rank: int, name: str, first: int) -> int:
    """Drop ``rank``'s stored values of metric ``name`` logged at step ``first`` or later (values
    without a step stay); how many were dropped."""
    dropped = 0
    where = (metric_chunks.c.run_id == run_id, metric_chunks.c.rank == rank, metric_chunks.c.name == name)
    for row in conn.execute(select(metric_chunks.c.id, metric_chunks.c.steps, metric_chunks.c.vals,
                                   metric_chunks.c.ts).where(*where)).all():
        steps, vals, ts = array("q"), array("d"), array("d")
        steps.frombytes(row.steps)
        vals.frombytes(row.vals)
        ts.frombytes(row.ts)
        keep = [i for i, s in enumerate(steps) if s == NO_STEP or s < first]
        if len(keep) == len(steps):
            continue
        dropped += len(steps) - len(keep)
        if not keep:
            conn.execute(metric_chunks.delete().where(metric_chunks.c.id == row.id))
            continue
        conn.execute(update(metric_chunks).where(metric_chunks.c.id == row.id).values(
            count=len(keep), steps=array("q", [steps[i] for i in keep]).tobytes(),
            vals=array("d", [vals[i] for i in keep]).tobytes(), ts=array("d", [ts[i] for i in keep]).tobytes()))
    gone = conn.execute(metrics.delete().where(metrics.c.run_id == run_id, metrics.c.rank == rank,
                                               metrics.c.name == name, metrics.c.step >= first))
    return dropped + int(gone.rowcount or 0)


def _chunk_rows(run_id: str, rank: int, series: Sequence[Series]) -> list[dict[str, Any]]:
    rows = []
    for name, values, steps, ts in series:
        if not values:
            continue
        rows.append({
            "run_id": run_id, "name": name, "rank": rank, "count": len(values),
            "vals": array("d", values).tobytes(),
            "steps": array("q", [NO_STEP if s is None else s for s in steps]).tobytes(),
            "ts": array("d", ts).tobytes(),
        })
    return rows


def _one_line(err: BaseException) -> str:
    msg = str(getattr(err, "orig", None) or err).strip().splitlines()
    return msg[0] if msg else type(err).__name__


def _typed(row: Any, workspace_dir: str | None = None) -> dict[str, Any]:
    """A runs row as a dict whose ``status`` is a RunStatus and ``kind`` a RunKind (both compare
    equal to their stored strings, and serialize as them), and ``run_dir`` absolute in this workspace
    (stored relative to it, so a moved workspace keeps its runs; an older absolute one that no longer
    exists is found under this workspace's ``runs/``)."""
    out = dict(row)
    run_dir = out.get("run_dir")
    if workspace_dir and run_dir:
        if not os.path.isabs(run_dir):
            out["run_dir"] = os.path.join(workspace_dir, run_dir)
        elif not os.path.isdir(run_dir):
            moved = os.path.join(workspace_dir, "runs", os.path.basename(run_dir.rstrip("/")))
            if os.path.isdir(moved):
                out["run_dir"] = moved
    out["status"] = RunStatus(out["status"])
    out["kind"] = RunKind(out.get("kind") or "run")
    return out


# ---- faults: what a store error means, and a store that waits a fault out ------------------------------

#: the store refused a write for a reason that may pass (disk full, read-only, server down or restarting)
_TRANSIENT_HINTS = (
    "disk is full", "disk full", "no space left", "database is locked", "readonly database", "read-only",
    "unable to open database", "disk i/o error", "connection refused", "could not connect", "server closed",
    "terminating connection", "connection is closed", "connection reset", "the database system is",
    "connection timed out", "ssl connection has been closed", "consuming input failed", "broken pipe",
)


def store_fault(err: BaseException, url: str) -> str | None:
    """One line naming a store fault that may pass (and what to do), or None for an error that will not
    (a constraint, a bad value, a bug): the former are retried, the latter are not."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    if isinstance(err, WorkspaceError) and getattr(err, "fault", None):
        return str(err)
    if not isinstance(err, DBAPIError | OSError):
        return None
    text_ = _one_line(err).lower()
    errno = getattr(err, "errno", None) or getattr(getattr(err, "orig", None), "errno", None)
    if errno == 28 or any(h in text_ for h in ("disk is full", "disk full", "no space left")):
        return _disk_full(url)
    if "readonly" in text_ or "read-only" in text_ or errno == 30:
        return (f"the workspace store is read-only ({_safe_url(url)}): reading works; to write, make "
                f"{_store_dir(url) or 'the store'} writable again")
    if isinstance(err, DBAPIError) and err.connection_invalidated:
        return f"the connection to the store ({_safe_url(url)}) was lost: {_one_line(err)}; is the database up?"
    if any(h in text_ for h in _TRANSIENT_HINTS):
        if url.startswith("sqlite"):
            return f"the workspace store ({_safe_url(url)}) cannot be written: {_one_line(err)}"
        return f"the store's database server ({_safe_url(url)}) is not answering: {_one_line(err)}; is it up?"
    return None


def _store_dir(url: str) -> str | None:
    if not url.startswith("sqlite:///"):
        return None
    return os.path.dirname(os.path.abspath(url[len("sqlite:///"):])) or None


def _disk_full(url: str) -> str:
    import shutil  # noqa: PLC0415

    where = _store_dir(url)
    if where is None:
        return f"the store's database server ({_safe_url(url)}) has no disk space left; free space on its data disk"
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = 0
    return f"the workspace disk is full: {where}, {free:,} bytes free; free some space and the run goes on"


def quiet_print(*args: Any, **kwargs: Any) -> None:
    """print(), except that a log file on a full disk is no reason to fail."""
    try:
        print(*args, **kwargs)
    except (OSError, ValueError):
        pass


class RetryingStore:
    """A :class:`Store` whose calls wait out a passing fault (disk full, read-only, the database down
    or restarting) with backoff for up to ``seconds``, saying once what they wait for, then raise a
    :class:`WorkspaceError` naming the fault. What a supervisor uses, so that a fault ends a run only
    when it must and with its real cause. Attributes that are not methods pass through."""

    def __init__(self, store: Store, seconds: float, say: Any = None) -> None:
        self._store = store
        self._seconds = seconds
        self._say = say or quiet_print

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value) or name.startswith("_"):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call(value, *args, **kwargs)

        return call

    def call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = time.time() + self._seconds
        delay, told = 0.5, None
        while True:
            try:
                result = func(*args, **kwargs)
            except Exception as err:
                fault = store_fault(err, self._store.url)
                if fault is None:
                    raise
                if time.time() + delay > deadline:
                    raise WorkspaceError(fault, fault=True) from None
                if fault != told:
                    self._say(f"torchyard supervisor: {fault}; retrying for up to {self._seconds:.0f} s", flush=True)
                    told = fault
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if told is not None:
                self._say("torchyard supervisor: the store answers again", flush=True)
            return result
