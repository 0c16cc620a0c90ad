"""Model registry: model_names, models, model_tags, model_properties, model_aliases, model_alias_events.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "model_names",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("next_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("manifest_id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("file_count", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("file_name", sa.String(256), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("experiment", sa.String(128), nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("framework", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_models_run_id", "models", ["run_id"])
    for table in ("model_tags", "model_properties"):
        op.create_table(
            table,
            sa.Column("name", sa.String(128), primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True),
            sa.Column("key", sa.String(256), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
    op.create_table(
        "model_aliases",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("alias", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "model_alias_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("ts", sa.Float, nullable=False),
    )
    op.create_index("ix_model_alias_events", "model_alias_events", ["name", "alias"])


def downgrade() -> None:
    for table in ("model_alias_events", "model_aliases", "model_properties", "model_tags", "models", "model_names"):
        op.drop_table(table)
