"""Every table of the service, in one metadata: the schema is whole wherever it is imported.

Only portable SQL types are used: the same tables run on SQLite and PostgreSQL.
"""

from __future__ import annotations

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
)

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
    # mailsvc.relay.delivery.body). NULL: ``body`` is the whole message.
    Column("parts", Text, nullable=True),
    # What became of the automatic answers to it: why no acknowledgement or bounce went to its
    # sender, or which message carried the acknowledgement (copied into relay_log).
    Column("auto_reply", Text, nullable=True),
    # The node that accepted it (its large parts live under that node's var_dir unless they
    # are shared through the database).
    Column("node_id", String(64), nullable=True),
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
    # While in flight: the node that claimed it and until when its claim holds (database
    # clock, naive UTC). A claim whose lease has passed is taken over by any node.
    Column("node_id", String(64), nullable=True),
    Column("lease_until", DateTime, nullable=True),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_lease", "status", "lease_until"),
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
    # The head of the distribution's receipt-event hash chain (mailsvc.domain.evidence_chain):
    # the last event's link hash and number, written with the events. NULL: no chained event.
    Column("last_event_hash", String(64), nullable=True),
    Column("last_event_seq", Integer, nullable=True),
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


# Append-only evidence. States are derived from these rows (mailsvc.domain.receipt_states).
# Written only through mailsvc.storage.chain, which links each event into the chain.
receipt_events = Table(
    "receipt_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient_id", Integer, ForeignKey("distribution_recipients.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("source", String(16), nullable=False),
    Column("evidence", Text, nullable=False, default=""),
    # The event's link in its distribution's hash chain (mailsvc.domain.evidence_chain): its
    # number, its predecessor's link hash and the SHA-256 of its canonical content. NULL on
    # events written before the chain existed.
    Column("seq", Integer, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("content_hash", String(64), nullable=True),
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


acknowledgements = Table(
    "acknowledgements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender", String(254), nullable=False),
    Column("councillor", String(254), nullable=False),
    # The resident's day in the council's time zone (distribution.timezone), not UTC.
    Column("day", Date, nullable=False),
    Column("original_queue_id", String(32), nullable=False),
    Column("ack_queue_id", String(32), nullable=True),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("sender", "councillor", "day", name="uq_acknowledgements_once"),
    Index("ix_acknowledgements_day", "day"),
)


# Acknowledgements queued per UTC hour, in total (domain "*") and per resident's organisational
# domain: the hourly caps hold across the service's processes because they are counted here, in
# the transaction that queues the acknowledgement.
auto_reply_counts = Table(
    "auto_reply_counts",
    metadata,
    Column("hour", String(13), primary_key=True),  # "YYYY-MM-DDTHH", UTC
    Column("domain", String(255), primary_key=True),
    Column("count", Integer, nullable=False),
)


web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("clerk", String(254), nullable=False),  # the clerk's address
    Column("name", Text, nullable=False),  # display name, for pages and the audit log
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    # When the clerk's account and group membership were last checked in the directory.
    Column("checked_at", DateTime, nullable=True),
)


api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("last_used_at", DateTime, nullable=True),
    Column("revoked_at", DateTime, nullable=True),
    # After this (naive UTC) the token no longer works; tokens made before expiry existed
    # have none and keep working until revoked.
    Column("expires_at", DateTime, nullable=True),
    # Comma-separated: read, distributions, councillors (mailsvc.storage.clerks.SCOPES). A
    # token made before scopes existed gets every scope (what it could do then).
    Column("scopes", Text, nullable=True),
)


relay_log = Table(
    "relay_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", DateTime, nullable=False),
    Column("queue_id", String(32), nullable=False),
    Column("message_id", Text, nullable=True),  # the resident's Message-ID, to match replies
    Column("sender", Text, nullable=False),
    Column("recipient", Text, nullable=False),  # one row per councillor
    Column("size", Integer, nullable=False),
    Column("status", String(16), nullable=False, default="accepted"),
    Column("replied_at", DateTime, nullable=True),
    # Copied from messages.auto_reply: acknowledgement sent, or why none (nor a bounce) was.
    Column("auto_reply", Text, nullable=True),
    Index("ix_relay_log_received", "received_at"),
    Index("ix_relay_log_message_id", "message_id"),
)


# Password checks (SMTP AUTH, the clerks' sign-in) per key: "net:<client /64 or address>" or
# "user:<address>". Shared by every process on the database (mailsvc.storage.guard).
auth_throttle = Table(
    "auth_throttle",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False, default=0),
    Column("blocked_until", DateTime, nullable=True),  # naive UTC
    Column("updated_at", DateTime, nullable=False),
)

# Messages and recipients a councillor sent through submission, per hour (naive UTC, the start
# of the hour): the per-account sending limits of mailsvc.storage.guard.
send_counts = Table(
    "send_counts",
    metadata,
    Column("account", String(254), primary_key=True),
    Column("hour", DateTime, primary_key=True),
    Column("messages", Integer, nullable=False, default=0),
    Column("recipients", Integer, nullable=False, default=0),
)


# The scheduled jobs' last runs (mailsvc.jobs), one row per job: read by /metrics and by
# `mailsvc check`, which runs in another process.
job_runs = Table(
    "job_runs",
    metadata,
    Column("job", String(64), primary_key=True),
    Column("last_success_at", DateTime, nullable=True),  # naive UTC
    Column("last_failure_at", DateTime, nullable=True),
    Column("last_error", Text, nullable=True),  # the exception's type and message, short
)


# The `mailsvc serve` processes sharing the database, one row each (mailsvc.storage.nodes):
# their heartbeats and roles, for the scheduler's leadership and `mailsvc cluster status`.
nodes = Table(
    "nodes",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("host", Text, nullable=False, server_default=""),
    Column("pid", Integer, nullable=False, server_default="0"),
    Column("role", String(16), nullable=False, server_default="follower"),  # leader|follower
    Column("started_at", DateTime, nullable=False),  # naive UTC
    Column("heartbeat_at", DateTime, nullable=False),
    Column("stopped_at", DateTime, nullable=True),  # a clean stop; NULL while running
    Column("version", String(32), nullable=False, server_default=""),
)


# Files every node needs, kept in the database by the node that made them (PostgreSQL with
# several nodes; see mailsvc.storage.shared_files). Readable by whoever has the database role.
shared_files = Table(
    "shared_files",
    metadata,
    # The file's path under var_dir, "/"-separated: secrets/dkim-mail.pem, spool/<name>...
    Column("name", String(255), primary_key=True),
    Column("content", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("node_id", String(64), nullable=False, server_default=""),
    Column("created_at", DateTime, nullable=False),  # naive UTC
)
