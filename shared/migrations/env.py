"""Alembic environment: runs migrations on the connection handed in by `shared.db.migrate`.

The migrations in `versions/` are the one description of the schema; there is no model
metadata to compare against (`alembic check` has nothing to check), so none is kept.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
