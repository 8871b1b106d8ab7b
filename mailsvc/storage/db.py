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
    UniqueConstraint,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
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
    # Large attachments kept once on disk, not per message: JSON {"boundary", "files"} naming
    # encoded MIME parts under <var_dir>/documents/parts/ that follow ``body`` (see
    # mailsvc.delivery.body). NULL: ``body`` is the whole message.
    Column("parts", Text, nullable=True),
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


# --- Council sessions, their documents, distributions and receipts ----------------------------

council_sessions = Table(
    "council_sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("number", String(64), nullable=False, unique=True),  # "XV/2026"
    Column("kind", String(16), nullable=False),  # ordinary|extraordinary|budget|constituent
    Column("starts_at", DateTime, nullable=False),  # local time of the council (naive)
    Column("place", Text, nullable=False, default=""),
    Column("title", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False, default="planned"),  # planned|cancelled
    Column("created_at", DateTime, nullable=False),
    Column("created_by", Text, nullable=False),
)

agenda_items = Table(
    "agenda_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", Integer, ForeignKey("council_sessions.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("title", Text, nullable=False),
)

# Documents are content-addressed: the file lives at <var_dir>/documents/<sha256[:2]>/<sha256>.
documents = Table(
    "documents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", Integer, ForeignKey("council_sessions.id"), nullable=False, index=True),
    Column("agenda_item_id", Integer, ForeignKey("agenda_items.id"), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("filename", Text, nullable=False),
    Column("media_type", String(128), nullable=False),
    Column("doc_kind", String(32), nullable=False, default="other"),
    Column("size", Integer, nullable=False),
    Column("pages", Integer, nullable=True),
    Column("added_at", DateTime, nullable=False),
    Column("added_by", Text, nullable=False),
    # A supplement's amended draft replaces this one in later distributions.
    Column("replaced_by", Integer, nullable=True),
)

distributions = Table(
    "distributions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", Integer, ForeignKey("council_sessions.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # notice|supplement|date-change|cancellation
    # scheduled -> sending -> sent; scheduled -> cancelled
    Column("status", String(16), nullable=False, default="scheduled"),
    Column("due_at", DateTime, nullable=False),  # naive UTC
    Column("committee", String(64), nullable=True),  # slug; NULL: the whole council
    Column("document_ids", Text, nullable=False, default=""),  # comma-separated documents.id
    Column("note", Text, nullable=False, default=""),  # what changed (supplement, date change)
    Column("replies_to", Integer, nullable=True),  # the distribution a supplement amends
    Column("override_reason", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("sent_at", DateTime, nullable=True),
    Column("late", Integer, nullable=False, default=0),  # fell due while the service was down
    Index("ix_distributions_due", "status", "due_at"),
)

# One row per (distribution, recipient), written in the same transaction as its queued message:
# the unique key makes "each recipient gets each distribution exactly once" a database fact.
distribution_recipients = Table(
    "distribution_recipients",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("distribution_id", Integer, ForeignKey("distributions.id"), nullable=False),
    Column("address", String(254), nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("role", String(16), nullable=False, default="councillor"),  # councillor|copy
    Column("message_id", Text, nullable=False),  # the Message-ID header, with <>
    Column("queue_message_id", Integer, nullable=True, index=True),  # messages.id
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("distribution_id", "address", name="uq_distribution_recipient"),
)

# Append-only evidence. States are derived from these rows (mailsvc.domain.receipts).
receipt_events = Table(
    "receipt_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient_id", Integer, ForeignKey("distribution_recipients.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("source", String(16), nullable=False),
    Column("evidence", Text, nullable=False, default=""),
    Index("ix_receipt_events_recipient", "recipient_id", "kind"),
)

# Reminder rounds already done: (distribution, offset) once.
reminder_rounds = Table(
    "reminder_rounds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("distribution_id", Integer, ForeignKey("distributions.id"), nullable=False),
    Column("offset_key", String(32), nullable=False),
    Column("done_at", DateTime, nullable=False),
    Column("reminded", Integer, nullable=False, default=0),
    UniqueConstraint("distribution_id", "offset_key", name="uq_reminder_round"),
)


def utcnow() -> datetime:
    """Naive UTC: stored the same way on SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


# How long a SQLite connection waits for another connection's write lock before it gives up
# (SQLite's busy handler). A lock held this long means something is wrong; shorter waits are
# the ordinary turn-taking of the service's processes, the CLI and the web pages.
BUSY_TIMEOUT = 30.0
# SQLITE_BUSY and SQLITE_LOCKED (the primary codes, under their extended ones).
_BUSY_CODES = (5, 6)


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` (a driver error, or SQLAlchemy's wrapper of one) says SQLite's lock is
    held by another connection: a temporary condition, never a reason to give up on mail."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _BUSY_CODES


def create_engine(url: str, *, busy_timeout: float = BUSY_TIMEOUT) -> AsyncEngine:
    """An async engine; SQLite gets WAL and fsync on every commit (250 means stored), and every
    connection waits up to ``busy_timeout`` seconds for another connection's lock.

    Its writers need no ``BEGIN IMMEDIATE``: the driver (sqlite3's legacy transaction mode)
    runs reads before a transaction's first write outside it and begins the transaction just
    before that write, so the write lock is taken by a connection without a read snapshot,
    which SQLite's busy handler waits for (an upgrade from a read would fail at once)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer anyway, and several pooled connections only
        # fight over its lock (long tails under load). Callers queue for it instead.
        pool: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60}
        if not database or database == ":memory:":
            pool = {}  # one connection kept for the database's life (SQLAlchemy's StaticPool)
        engine = create_async_engine(url, connect_args={"timeout": busy_timeout}, **pool)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")
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
    # Tables defined beside their repositories join the metadata when imported.
    import mailsvc.storage.web  # noqa: F401

    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.run_sync(_add_missing_columns)
