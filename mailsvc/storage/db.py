"""Database engine and tables. SQLite (WAL, synchronous=FULL) by default, PostgreSQL for scale.

Only portable SQL is used: the same tables and queries run on both engines.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateColumn

metadata = MetaData()

# One row per accepted message. The body is kept only until every recipient is settled.
messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("queue_id", String(32), nullable=False, unique=True),
    Column("mail_from", Text, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("size", Integer, nullable=False),
    Column("client", Text, nullable=False, default=""),
    Column("body", LargeBinary, nullable=True),
    Column("status", String(16), nullable=False, default="queued"),  # queued|done|dead
    Column("error", Text, nullable=True),
    # Who produced it: inbound (a resident via SMTP), submission, welcome, dsn, ack, local.
    # Acknowledgements answer only "inbound"; bounces and acks are never answered.
    Column("origin", String(16), nullable=False, server_default="local"),
)

# One row per (message, recipient): the unit of delivery, retry and evidence.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("recipient", Text, nullable=False),
    # lmtp: the council's mailbox store; smtp: the smarthost. Decided at enqueue from the domain.
    Column("route", String(8), nullable=False, server_default="lmtp"),
    # queued | inflight | deferred | delivered | failed | dead
    Column("status", String(16), nullable=False, default="queued"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("last_reply", Text, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_route_due", "route", "status", "next_attempt_at"),
    Index("ix_deliveries_message", "message_id"),
)


# The council register: every councillor who ever had a mailbox. Rows are never deleted, so an
# address once used is never given to anyone else. The directory holds the account itself.
councillors = Table(
    "councillors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address", String(254), nullable=False, unique=True),
    Column("dn", Text, nullable=True),
    Column("external_id", String(128), nullable=True, index=True),
    Column("given_names", Text, nullable=False),
    Column("surname", Text, nullable=False),
    Column("district", Text, nullable=False, default=""),
    Column("club", Text, nullable=False, default=""),
    Column("role", String(32), nullable=False, default="radny"),
    Column("committees", Text, nullable=False, default=""),  # comma-separated slugs
    Column("term_start", Date, nullable=True),
    Column("mandate_end", Date, nullable=True),
    Column("end_reason", Text, nullable=True),
    Column("private_email", Text, nullable=True),
    Column("phone", Text, nullable=True),
    Column("status", String(16), nullable=False, default="active"),  # active|disabled|removed
    Column("disabled_at", DateTime, nullable=True),
    Column("removed_at", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# Every directory change, with before and after (JSON), who did it and with which command.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("command", Text, nullable=False),
    Column("address", String(254), nullable=True, index=True),
    Column("action", String(32), nullable=False),
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
)


def utcnow() -> datetime:
    """Naive UTC: stored the same way on SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and fsync on every commit (250 means stored)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer anyway, and several pooled connections only
        # fight over its lock (long tails under load). Callers queue for it instead.
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _add_missing_columns(sync_conn: Connection) -> None:
    """Bring tables made by an older version up to date: columns added since (each nullable or
    with a server default) and indexes. Tables are never rewritten or dropped."""
    inspector = inspect(sync_conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ddl = CreateColumn(column).compile(dialect=sync_conn.dialect)
                sync_conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(sync_conn)


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.run_sync(_add_missing_columns)
