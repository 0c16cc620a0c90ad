"""The metadata store's tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` build them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

#: The Alembic revision this code expects; a test pins it to the migrations' head.
SCHEMA_REVISION = "0008"

metadata = MetaData()

experiments = Table(
    "experiments",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=True),  # revision 0006: the team server's user
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("experiment", String(128), nullable=False, index=True),
    Column("parent_id", String(200), nullable=True, index=True),
    Column("kind", String(16), nullable=False, server_default="run"),  # RunKind: run, sweep, trial
    Column("status", String(32), nullable=False),
    Column("display_name", String(256), nullable=True),
    Column("compute_target", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("ended_at", Float, nullable=True),
    Column("spec", Text, nullable=False),
    Column("details", Text, nullable=False, default="{}"),
    Column("run_dir", Text, nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("supervisor_pid", Integer, nullable=True),
    Column("supervisor_host", String(256), nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("created_by", String(128), nullable=True),  # revision 0006
)

status_events = Table(
    "status_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("ts", Float, nullable=False),
    Column("detail", Text, nullable=True),
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
)

run_properties = Table(
    "run_properties",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
)

# kind: 0 scalar, 1 list, 2 row, 3 table, 4 image, 5 string. Scalars use `value`; the rest `payload` (JSON).
metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), nullable=False),
    Column("name", String(256), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("step", BigInteger, nullable=True),  # revision 0007 (INTEGER before)
    Column("value", Float, nullable=True),
    Column("payload", Text, nullable=True),
    Column("kind", SmallInteger, nullable=False),
    Column("ts", Float, nullable=False),
)
Index("ix_metrics_run_name", metrics.c.run_id, metrics.c.name, metrics.c.rank)

# Scalar series, packed: one row holds a chunk of one metric's values as arrays (float64 values,
# int64 steps with NO_STEP for "none", float64 wall times), so a run can log millions of values.
metric_chunks = Table(
    "metric_chunks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), nullable=False),
    Column("name", String(256), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("count", Integer, nullable=False),
    Column("steps", LargeBinary, nullable=False),
    Column("vals", LargeBinary, nullable=False),
    Column("ts", LargeBinary, nullable=False),
)
Index("ix_metric_chunks_run", metric_chunks.c.run_id, metric_chunks.c.rank, metric_chunks.c.name)
NO_STEP = -(2**63)

# Rank 0's scalar metrics summarized per run (workspace/summary.py keeps it), so the runs table can sort
# and show last/best values without reading the packed series.
run_metric_summary = Table(
    "run_metric_summary",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("name", String(256), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("last", Float, nullable=True),
    Column("min", Float, nullable=True),
    Column("max", Float, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    Column("last_ts", Float, nullable=True),
)
Index("ix_run_metric_summary_name_last", run_metric_summary.c.name, run_metric_summary.c.last,
      run_metric_summary.c.run_id)
Index("ix_runs_created", runs.c.created_at, runs.c.id)

# ---- ingest offsets (revision 0008) ---------------------------------------------------------
# How far into each of a run's journals (by its name under journal/) the store has every value;
# moved in the transaction that stores the values, so a replacing supervisor neither skips nor repeats.
ingest_offsets = Table(
    "ingest_offsets",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("journal", String(256), primary_key=True),
    Column("offset", BigInteger, nullable=False),
)

# ---- model registry (revision 0005) -------------------------------------------------------
# A name's versions are numbered from 1 by ``model_names.next_version`` (never reused, even after a
# delete). Each version's files are a snapshot-store manifest (content-addressed objects).
model_names = Table(
    "model_names",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("next_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("manifest_id", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("file_count", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # "file" or "folder"
    Column("file_name", String(256), nullable=False),
    Column("run_id", String(200), nullable=True, index=True),
    Column("experiment", String(128), nullable=True),
    Column("description", Text, nullable=True),
    Column("framework", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=True),  # revision 0006
)

model_tags = Table(
    "model_tags",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
)

model_properties = Table(
    "model_properties",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("alias", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Every (re-)point of an alias, in order; version NULL records a removal.
model_alias_events = Table(
    "model_alias_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("alias", String(128), nullable=False),
    Column("version", Integer, nullable=True),
    Column("ts", Float, nullable=False),
)
Index("ix_model_alias_events", model_alias_events.c.name, model_alias_events.c.alias)

# ---- the team server's users and access (revision 0006) ----------------------------------------
# Passwords are scrypt hashes; token secrets are stored as SHA-256 of 32 random bytes (the token's
# id is public, its secret never stored). ``kind`` is api (made by a user), session (a browser login)
# or run (a job's per-run token, scoped to ``run_id``).
users = Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),  # admin, member, viewer
    Column("created_at", Float, nullable=False),
    Column("disabled", SmallInteger, nullable=False, server_default="0"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_name", String(128), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scope", String(16), nullable=False),  # read, write, admin
    Column("kind", String(16), nullable=False),  # api, session, run
    Column("run_id", String(200), nullable=True),
    Column("description", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
)

experiment_grants = Table(
    "experiment_grants",
    metadata,
    Column("experiment", String(128), primary_key=True),
    Column("user_name", String(128), primary_key=True),
    Column("level", String(16), nullable=False),  # READ, EDIT, MANAGE
    Column("granted_by", String(128), nullable=True),
    Column("granted_at", Float, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("user_name", String(128), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=True),
    Column("detail", Text, nullable=True),
)
Index("ix_audit_log_ts", audit_log.c.ts)
