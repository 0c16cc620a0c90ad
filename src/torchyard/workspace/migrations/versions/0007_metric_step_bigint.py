"""metrics.step as a 64-bit integer, like the packed series' steps (PostgreSQL's INTEGER is 32-bit: a
string metric logged at step 2**31 was refused there, and SQLite took it).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    # on SQLite (whose INTEGER is already 64-bit) the batch copies the table, which holds only the
    # non-scalar values (scalars live packed in metric_chunks): the declared type then matches everywhere
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("step", type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("step", type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=True)
