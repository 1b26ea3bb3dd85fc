"""The action audit log (issue 18): API actions and what clients did inside sandboxes through envd.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("sandbox_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(1024), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
    )
    op.create_index("ix_audit_team_time", "audit_events", ["team_id", "time"])
    op.create_index("ix_audit_team_sandbox_time", "audit_events", ["team_id", "sandbox_id", "time"])
    op.create_index("ix_audit_time", "audit_events", ["time"])


def downgrade() -> None:
    for name in ("ix_audit_time", "ix_audit_team_sandbox_time", "ix_audit_team_time"):
        op.drop_index(name, table_name="audit_events")
    op.drop_table("audit_events")
