"""The initial schema: experiments, runs, status events, tags, properties, metrics.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("experiment", sa.String(128), nullable=False, index=True),
        sa.Column("parent_id", sa.String(200), nullable=True, index=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=True),
        sa.Column("compute_target", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("run_dir", sa.Text, nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("supervisor_pid", sa.Integer, nullable=True),
        sa.Column("supervisor_host", sa.String(256), nullable=True),
        sa.Column("heartbeat_at", sa.Float, nullable=True),
    )
    op.create_table(
        "status_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(200), nullable=False, index=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
    )
    for name in ("run_tags", "run_properties"):
        op.create_table(
            name,
            sa.Column("run_id", sa.String(200), primary_key=True),
            sa.Column("key", sa.String(256), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("payload", sa.Text, nullable=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
    )
    op.create_index("ix_metrics_run_name", "metrics", ["run_id", "name", "rank"])


def downgrade() -> None:
    for name in ("metrics", "run_properties", "run_tags", "status_events", "runs", "experiments"):
        op.drop_table(name)
