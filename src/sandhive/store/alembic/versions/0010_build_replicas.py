"""Template builds through any control-plane replica (issue 17): who runs a build and when it last said so,
build log lines as rows, and a template's aliases and tags as changed after its build.

- `template_builds.owner` / `heartbeat_at`: the replica that started the build, refreshed while it runs; a build
  whose owner stopped refreshing is failed by whichever replica notices (not by any replica that restarts).
- `template_build_logs`: one row per log entry, `(build_id, seq)`, appended in batches by the running replica, so
  every replica answers `GET .../status` with the same lines.
- `team_templates.aliases` / `tags`: set by `PUT /templates/{id}`-style renames and tag changes on a control plane
  with remote nodes (NULL: as the template's image says).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sandhive.store.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("template_builds", sa.Column("owner", sa.String(64), nullable=True))
    op.add_column("template_builds", sa.Column("heartbeat_at", UTCDateTime(), nullable=True))
    op.add_column("team_templates", sa.Column("aliases", sa.JSON(), nullable=True))
    op.add_column("team_templates", sa.Column("tags", sa.JSON(), nullable=True))
    op.create_table(
        "template_build_logs",
        sa.Column("build_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("entry", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("template_build_logs")
    with op.batch_alter_table("team_templates") as batch:
        batch.drop_column("tags")
        batch.drop_column("aliases")
    with op.batch_alter_table("template_builds") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("owner")
