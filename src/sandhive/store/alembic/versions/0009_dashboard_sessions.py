"""Dashboard sessions in the store (issue 18): shared by control-plane replicas, kept over restarts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_dashboard_sessions_key_seen", "dashboard_sessions", ["key_id", "seen_at"])
    op.create_index("ix_dashboard_sessions_seen", "dashboard_sessions", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_sessions_seen", table_name="dashboard_sessions")
    op.drop_index("ix_dashboard_sessions_key_seen", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
