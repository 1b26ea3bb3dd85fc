"""Alembic environment: migrations run on the connection `sandhive.store.engine.migrate` hands in.

Run from a shell (`alembic -x url=sqlite:///... upgrade head` with `script_location` pointing here) it
opens its own connection from the `url` argument instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from sandhive.store.models import Base

config = context.config


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    run(given)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database to migrate: pass `-x url=...` or set sqlalchemy.url")
    with create_engine(url).begin() as conn:
        run(conn)
