"""Initial schema: teams, api_keys, sandboxes, idempotency_records.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sandhive.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_team_id", "api_keys", ["team_id"])
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    op.create_table(
        "sandboxes",
        sa.Column("sandbox_id", sa.String(32), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("template_id", sa.String(255), nullable=False),
        sa.Column("alias", sa.String(255), nullable=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("end_at", UTCDateTime(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("env_vars", sa.JSON(), nullable=False),
        sa.Column("cpu_count", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("disk_mb", sa.Integer(), nullable=False),
        sa.Column("envd_version", sa.String(32), nullable=False),
        sa.Column("envd_access_token", sa.String(128), nullable=False),
        sa.Column("allow_internet_access", sa.Boolean(), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("runtime_state", sa.JSON(), nullable=False),
        sa.Column("killed_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_sandboxes_team_state_started", "sandboxes", ["team_id", "state", "started_at"])
    op.create_index("ix_sandboxes_state_end", "sandboxes", ["state", "end_at"])
    op.create_table(
        "idempotency_records",
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("sandbox_id", sa.String(32), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("idempotency_records")
    op.drop_index("ix_sandboxes_state_end", "sandboxes")
    op.drop_index("ix_sandboxes_team_state_started", "sandboxes")
    op.drop_table("sandboxes")
    op.drop_index("ix_api_keys_prefix", "api_keys")
    op.drop_index("ix_api_keys_team_id", "api_keys")
    op.drop_table("api_keys")
    op.drop_table("teams")
