"""Private ports (issue 16): a sandbox's network settings as asked (`network`: E2B's SandboxNetworkConfig, the
keys this server honours) and, when its ports are private, the traffic access token the proxy asks for.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("network", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("traffic_access_token", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        for column in ("traffic_access_token", "network"):
            batch.drop_column(column)
