"""The run store: runs and their events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROW_NUMBER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("num", ROW_NUMBER, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("model_requested", sa.String(512)),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("mcp_servers", sa.Text, nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("rounds", sa.Integer, nullable=False),
        sa.Column("usage", sa.Text),
        sa.Column("warnings", sa.Text),
        sa.Column("tool_calls", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Float),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("key_name", sa.String(256)),
        sa.Column("instance", sa.String(256), nullable=False),
        sa.Column("incomplete", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_runs_status_num", "runs", ["status", "num"])
    op.create_index("ix_runs_model_num", "runs", ["model", "num"])
    op.create_index("ix_runs_finished_at", "runs", ["finished_at"])
    op.create_table(
        "run_events",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_events")
    op.drop_table("runs")
