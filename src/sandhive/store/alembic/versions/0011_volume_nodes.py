"""Volumes through remote nodes (issue 17 with issue 14's volumes): which node holds a volume's image.

- `volumes.node_id`: the `sandhive node` whose data dir keeps the volume's image, on a control plane with remote
  nodes (NULL: this host's own node, as on a single host).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("volumes", sa.Column("node_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.drop_column("node_id")
