"""Per-run metric summary (last/min/max/count per scalar metric of rank 0) for cheap sorting, and an
index for listing runs newest first.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "run_metric_summary",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("last", sa.Float, nullable=True),
        sa.Column("min", sa.Float, nullable=True),
        sa.Column("max", sa.Float, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("last_ts", sa.Float, nullable=True),
    )
    op.create_index("ix_run_metric_summary_name_last", "run_metric_summary", ["name", "last", "run_id"])
    op.create_index("ix_runs_created", "runs", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_created", "runs")
    op.drop_table("run_metric_summary")
