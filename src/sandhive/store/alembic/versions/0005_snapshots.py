"""Snapshots of running sandboxes (issue 14): the team's, with their files' directory and the backend's state.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sandhive.store.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("snapshot_id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("source_sandbox_id", sa.String(32), nullable=False),
        sa.Column("template_id", sa.String(255), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("directory", sa.String(1024), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("cpu_count", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("disk_mb", sa.Integer(), nullable=False),
        sa.Column("allow_internet_access", sa.Boolean(), nullable=False),
        sa.Column("env_vars", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("team_id", "name", name="uq_snapshots_team_name"),
    )
    op.create_index("ix_snapshots_team_created", "snapshots", ["team_id", "created_at"])
    op.create_index("ix_snapshots_source_sandbox_id", "snapshots", ["source_sandbox_id"])


def downgrade() -> None:
    op.drop_index("ix_snapshots_source_sandbox_id", "snapshots")
    op.drop_index("ix_snapshots_team_created", "snapshots")
    op.drop_table("snapshots")
