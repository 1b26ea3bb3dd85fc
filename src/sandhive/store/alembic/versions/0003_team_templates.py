"""Templates belong to teams: names unique per team (not per server), a `public` flag, team slugs for
`team-slug/name`, and admin API keys.

`template_owners` (a globally unique `name`) becomes `team_templates` (unique `(team_id, name)`): a new table
copied from the old one, which works the same on SQLite (whose unnamed unique constraint cannot be dropped in
place) and PostgreSQL. Existing templates keep their ids and names and stay with their teams, private.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

from sandhive.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "team"


def upgrade() -> None:
    op.add_column("teams", sa.Column("slug", sa.String(64), nullable=True))
    conn = op.get_bind()
    taken: set[str] = set()
    for team_id, name in conn.execute(sa.text("SELECT id, name FROM teams ORDER BY created_at, id")).all():
        slug, n = _slug(name), 1
        while slug in taken:
            n += 1
            slug = f"{_slug(name)[:36]}-{n}"
        taken.add(slug)
        conn.execute(sa.text("UPDATE teams SET slug = :slug WHERE id = :id"), {"slug": slug, "id": team_id})
    op.create_index("ix_teams_slug", "teams", ["slug"], unique=True)  # an index: no table rebuild on SQLite
    op.add_column("api_keys", sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "team_templates",
        sa.Column("template_id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("team_id", "name", name="uq_team_templates_team_name"),
    )
    op.create_index("ix_team_templates_team_id", "team_templates", ["team_id"])
    op.execute("INSERT INTO team_templates (template_id, team_id, name, public, created_at) "
               "SELECT template_id, team_id, name, false, created_at FROM template_owners")
    op.drop_index("ix_template_owners_team_id", "template_owners")
    op.drop_table("template_owners")


def downgrade() -> None:
    op.create_table(
        "template_owners",
        sa.Column("template_id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_template_owners_team_id", "template_owners", ["team_id"])
    op.execute("INSERT INTO template_owners (template_id, team_id, name, created_at) "
               "SELECT template_id, team_id, name, created_at FROM team_templates")
    op.drop_index("ix_team_templates_team_id", "team_templates")
    op.drop_table("team_templates")
    op.drop_column("api_keys", "admin")
    op.drop_index("ix_teams_slug", "teams")
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("slug")
