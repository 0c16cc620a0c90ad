"""Packed scalar series: metric_chunks.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "metric_chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("steps", sa.LargeBinary, nullable=False),
        sa.Column("vals", sa.LargeBinary, nullable=False),
        sa.Column("ts", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_metric_chunks_run", "metric_chunks", ["run_id", "rank", "name"])


def downgrade() -> None:
    op.drop_table("metric_chunks")
