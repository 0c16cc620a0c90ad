"""ingest_offsets: how far into each journal of a run the store has every value.

Written in the transaction that stores a batch (Store.ingest_batch), so a supervisor that replaces a
dead one (runtime.supervisor's adoption) goes on from there: nothing read twice, nothing skipped.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "ingest_offsets",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("journal", sa.String(256), primary_key=True),
        sa.Column("offset", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ingest_offsets")
