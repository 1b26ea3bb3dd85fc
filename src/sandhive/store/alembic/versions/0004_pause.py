"""Paused sandboxes (issue 14): when a sandbox was paused, where its saved state lies (`saved`: the node's
pause directory, mode and backend-private state), and its lifecycle (`autoPause`, `autoPauseMemory`,
`autoResume`). A paused sandbox's row keeps `state = "paused"` across server restarts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sandhive.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("paused_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("saved", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("auto_pause", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("auto_pause_memory", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("auto_resume", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        for column in ("auto_resume", "auto_pause_memory", "auto_pause", "saved", "paused_at"):
            batch.drop_column(column)
