"""Runs say what they are: runs.kind ('run', 'sweep' or 'trial').

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="run"))
    # workspaces from before: a sweep's parent was told by its stored definition, a trial by its parent
    op.execute("UPDATE runs SET kind = 'trial' WHERE parent_id IS NOT NULL")
    op.execute("UPDATE runs SET kind = 'sweep' WHERE parent_id IS NULL AND spec LIKE '%\"kind\": \"sweep\"%'")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("kind")
