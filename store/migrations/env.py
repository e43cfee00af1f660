"""Alembic environment: run by store.db.migrate with its connection, or with a URL for development.

A new revision, compared against store.records.Base.metadata::

    python -c "from alembic import command; from store.db import alembic_config; \
        c = alembic_config(); c.set_main_option('sqlalchemy.url', 'sqlite:///data/bafang.db'); \
        command.revision(c, message='add alerts', autogenerate=True)"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import store.alerts  # noqa: F401  (registers the alert tables on Base.metadata for autogenerate)
from store.records import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later migrations use batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run against the connection given by store.db.migrate, or an engine built from the URL."""
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from store.db import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: give the database with -x url=... or sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
