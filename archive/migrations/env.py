"""Alembic environment of the archive: runs on the connection that ``archive.migrate`` passes in."""

from __future__ import annotations

from alembic import context

from archive.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("archive migrations run through archive.migrate.upgrade(), which passes a connection")

# render_as_batch lets later revisions alter SQLite tables (copy and move) with the same code as PostgreSQL.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
