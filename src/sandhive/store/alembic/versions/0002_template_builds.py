"""Template builds: which team owns a template registered through the API, and each build's record.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sandhive.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "template_owners",
        sa.Column("template_id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_template_owners_team_id", "template_owners", ["team_id"])
    op.create_table(
        "template_builds",
        sa.Column("build_id", sa.String(36), primary_key=True),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("cpu_count", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("disk_mb", sa.Integer(), nullable=False),
        sa.Column("reason", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_template_builds_template_created", "template_builds", ["template_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_template_builds_template_created", "template_builds")
    op.drop_table("template_builds")
    op.drop_index("ix_template_owners_team_id", "template_owners")
    op.drop_table("template_owners")
