"""Alembic's environment for the schema's migrations.

Always online, on the connection ``mailsvc.storage.schema`` hands over in
``config.attributes["connection"]``, inside the transaction (and lock) it holds: Alembic
begins and commits nothing of its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from mailsvc.storage.tables import metadata

if context.is_offline_mode():
    raise RuntimeError("mailsvc migrations run on a connection (mailsvc db upgrade), not as SQL")

connection = context.config.attributes["connection"]
assert isinstance(connection, Connection)
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters most things only by copying the table: autogenerate writes batch blocks.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
