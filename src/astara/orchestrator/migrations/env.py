"""Alembic environment of the orchestrator's database: runs on the connection ``store.upgrade``
hands over, with a version table of its own (the network API may share the database)."""

from __future__ import annotations

from alembic import context

from astara.orchestrator.store import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
