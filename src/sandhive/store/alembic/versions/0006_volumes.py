"""Volumes (E2B's beta API): a team's named volumes, and which sandbox mounts which (issue 14).

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sandhive.store.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("volume_id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("size_mb", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("team_id", "name", name="uq_volumes_team_name"),
    )
    op.create_index("ix_volumes_team_id", "volumes", ["team_id"])
    op.create_table(
        "volume_mounts",
        sa.Column("sandbox_id", sa.String(32), primary_key=True),
        sa.Column("volume_id", sa.String(64), primary_key=True),
        sa.Column("path", sa.String(1024), nullable=False),
    )
    op.create_index("ix_volume_mounts_volume_id", "volume_mounts", ["volume_id"])


def downgrade() -> None:
    op.drop_index("ix_volume_mounts_volume_id", "volume_mounts")
    op.drop_table("volume_mounts")
    op.drop_index("ix_volumes_team_id", "volumes")
    op.drop_table("volumes")
