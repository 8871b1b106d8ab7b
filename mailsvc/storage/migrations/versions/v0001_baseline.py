"""Baseline: the schema as ``create_schema`` made it before migrations (commit dd74305).

Revision ID: 0001
Revises:
Create Date: 2026-12-03

Written out here, frozen, rather than taken from ``mailsvc.storage.tables`` (which moves on
with the code). ``mailsvc.storage.schema`` also uses ``baseline()`` to recognise a database made
before migrations, and to add to one made by an older version still what its start-up added.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def baseline() -> sa.MetaData:
    """Every table, column, index and constraint of the baseline (DDL only)."""
    md = sa.MetaData()

    def table(name: str, *items: Any) -> None:
        sa.Table(name, md, *items)

    def pk() -> sa.Column[Any]:
        return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)

    def col(name: str, type_: Any, null: bool = False) -> sa.Column[Any]:
        return sa.Column(name, type_, nullable=null)

    def fk(name: str, target: str, *, index: bool = False) -> sa.Column[Any]:
        return sa.Column(name, sa.Integer, sa.ForeignKey(target), nullable=False, index=index)

    s = sa.String
    table(
        "messages",
        pk(),
        sa.Column("queue_id", s(32), nullable=False, unique=True),
        col("mail_from", sa.Text),
        col("received_at", sa.DateTime),
        col("size", sa.Integer),
        col("client", sa.Text),
        col("body", sa.LargeBinary, null=True),
        col("status", s(16)),
        col("error", sa.Text, null=True),
        sa.Column("origin", s(16), nullable=False, server_default="local"),
        col("parts", sa.Text, null=True),
        col("auto_reply", sa.Text, null=True),
    )
    table(
        "deliveries",
        pk(),
        sa.Column(
            "message_id",
            sa.Integer,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        col("recipient", sa.Text),
        sa.Column("route", s(8), nullable=False, server_default="lmtp"),
        col("status", s(16)),
        col("attempts", sa.Integer),
        col("next_attempt_at", sa.DateTime),
        col("last_reply", sa.Text, null=True),
        col("updated_at", sa.DateTime),
        sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_deliveries_route_due", "route", "status", "next_attempt_at"),
        sa.Index("ix_deliveries_message", "message_id"),
    )
    table(
        "councillors",
        pk(),
        sa.Column("address", s(254), nullable=False, unique=True),
        col("dn", sa.Text, null=True),
        sa.Column("external_id", s(128), nullable=True, index=True),
        col("given_names", sa.Text),
        col("surname", sa.Text),
        col("district", sa.Text),
        col("club", sa.Text),
        col("role", s(32)),
        col("committees", sa.Text),
        col("term_start", sa.Date, null=True),
        col("mandate_end", sa.Date, null=True),
        col("end_reason", sa.Text, null=True),
        col("private_email", sa.Text, null=True),
        col("phone", sa.Text, null=True),
        col("status", s(16)),
        col("disabled_at", sa.DateTime, null=True),
        col("removed_at", sa.DateTime, null=True),
        col("created_at", sa.DateTime),
        col("updated_at", sa.DateTime),
    )
    table(
        "audit_log",
        pk(),
        col("at", sa.DateTime),
        col("actor", sa.Text),
        col("command", sa.Text),
        sa.Column("address", s(254), nullable=True, index=True),
        col("action", s(32)),
        col("before", sa.Text, null=True),
        col("after", sa.Text, null=True),
    )
    table(
        "council_sessions",
        pk(),
        sa.Column("number", s(64), nullable=False, unique=True),
        col("kind", s(16)),
        col("starts_at", sa.DateTime),
        col("place", sa.Text),
        col("title", sa.Text),
        col("status", s(16)),
        col("created_at", sa.DateTime),
        col("created_by", sa.Text),
    )
    table(
        "agenda_items",
        pk(),
        fk("session_id", "council_sessions.id", index=True),
        col("position", sa.Integer),
        col("title", sa.Text),
    )
    table(
        "documents",
        pk(),
        fk("session_id", "council_sessions.id", index=True),
        sa.Column("agenda_item_id", sa.Integer, sa.ForeignKey("agenda_items.id"), nullable=True),
        col("sha256", s(64)),
        col("filename", sa.Text),
        col("media_type", s(128)),
        col("doc_kind", s(32)),
        col("size", sa.Integer),
        col("pages", sa.Integer, null=True),
        col("added_at", sa.DateTime),
        col("added_by", sa.Text),
        col("replaced_by", sa.Integer, null=True),
    )
    table(
        "distributions",
        pk(),
        fk("session_id", "council_sessions.id", index=True),
        col("kind", s(16)),
        col("status", s(16)),
        col("due_at", sa.DateTime),
        col("committee", s(64), null=True),
        col("document_ids", sa.Text),
        col("note", sa.Text),
        col("replies_to", sa.Integer, null=True),
        col("override_reason", sa.Text, null=True),
        col("created_at", sa.DateTime),
        col("created_by", sa.Text),
        col("started_at", sa.DateTime, null=True),
        col("sent_at", sa.DateTime, null=True),
        col("late", sa.Integer),
        col("last_event_hash", s(64), null=True),
        col("last_event_seq", sa.Integer, null=True),
        sa.Index("ix_distributions_due", "status", "due_at"),
    )
    table(
        "distribution_recipients",
        pk(),
        fk("distribution_id", "distributions.id"),
        col("address", s(254)),
        col("name", sa.Text),
        col("role", s(16)),
        col("message_id", sa.Text),
        sa.Column("queue_message_id", sa.Integer, nullable=True, index=True),
        col("created_at", sa.DateTime),
        sa.UniqueConstraint("distribution_id", "address", name="uq_distribution_recipient"),
    )
    table(
        "receipt_events",
        pk(),
        fk("recipient_id", "distribution_recipients.id"),
        col("kind", s(16)),
        col("at", sa.DateTime),
        col("source", s(16)),
        col("evidence", sa.Text),
        col("seq", sa.Integer, null=True),
        col("prev_hash", s(64), null=True),
        col("content_hash", s(64), null=True),
        sa.Index("ix_receipt_events_recipient", "recipient_id", "kind"),
    )
    table(
        "reminder_rounds",
        pk(),
        fk("distribution_id", "distributions.id"),
        col("offset_key", s(32)),
        col("done_at", sa.DateTime),
        col("reminded", sa.Integer),
        sa.UniqueConstraint("distribution_id", "offset_key", name="uq_reminder_round"),
    )
    table(
        "acknowledgements",
        pk(),
        col("sender", s(254)),
        col("councillor", s(254)),
        col("day", sa.Date),
        col("original_queue_id", s(32)),
        col("ack_queue_id", s(32), null=True),
        col("created_at", sa.DateTime),
        sa.UniqueConstraint("sender", "councillor", "day", name="uq_acknowledgements_once"),
        sa.Index("ix_acknowledgements_day", "day"),
    )
    table(
        "auto_reply_counts",
        sa.Column("hour", s(13), primary_key=True),
        sa.Column("domain", s(255), primary_key=True),
        col("count", sa.Integer),
    )
    table(
        "web_sessions",
        pk(),
        sa.Column("token_hash", s(64), nullable=False, unique=True),
        col("clerk", s(254)),
        col("name", sa.Text),
        col("csrf", s(64)),
        col("created_at", sa.DateTime),
        col("last_seen", sa.DateTime),
        col("checked_at", sa.DateTime, null=True),
    )
    table(
        "api_tokens",
        pk(),
        sa.Column("name", s(128), nullable=False, unique=True),
        sa.Column("token_hash", s(64), nullable=False, unique=True),
        col("created_at", sa.DateTime),
        col("created_by", sa.Text),
        col("last_used_at", sa.DateTime, null=True),
        col("revoked_at", sa.DateTime, null=True),
        col("expires_at", sa.DateTime, null=True),
        col("scopes", sa.Text, null=True),
    )
    table(
        "relay_log",
        pk(),
        col("received_at", sa.DateTime),
        col("queue_id", s(32)),
        col("message_id", sa.Text, null=True),
        col("sender", sa.Text),
        col("recipient", sa.Text),
        col("size", sa.Integer),
        col("status", s(16)),
        col("replied_at", sa.DateTime, null=True),
        col("auto_reply", sa.Text, null=True),
        sa.Index("ix_relay_log_received", "received_at"),
        sa.Index("ix_relay_log_message_id", "message_id"),
    )
    table(
        "auth_throttle",
        sa.Column("key", s(300), primary_key=True),
        col("failures", sa.Integer),
        col("blocked_until", sa.DateTime, null=True),
        col("updated_at", sa.DateTime),
    )
    table(
        "send_counts",
        sa.Column("account", s(254), primary_key=True),
        sa.Column("hour", sa.DateTime, primary_key=True),
        col("messages", sa.Integer),
        col("recipients", sa.Integer),
    )
    return md


def upgrade() -> None:
    baseline().create_all(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    baseline().drop_all(op.get_bind(), checkfirst=False)
