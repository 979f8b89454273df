"""Replicas, whole: approvals relayed between gateway processes, per-key limits counted in the store.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("tool_call_id", sa.String(256), primary_key=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_table(
        "key_runs",
        sa.Column("key_name", sa.String(256), primary_key=True),
        sa.Column("instance", sa.String(256), primary_key=True),
        sa.Column("running", sa.Integer, nullable=False),
    )
    op.create_table(
        "key_buckets",
        sa.Column("key_name", sa.String(256), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_buckets")
    op.drop_table("key_runs")
    op.drop_table("approvals")
