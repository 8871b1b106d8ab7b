"""Several nodes on one database: the nodes table (heartbeats, roles), and who holds each
in-flight delivery until when (claim leases), and which node spooled a message's parts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("host", sa.Text, nullable=False, server_default=""),
        sa.Column("pid", sa.Integer, nullable=False, server_default="0"),
        sa.Column("role", sa.String(16), nullable=False, server_default="follower"),
        sa.Column("started_at", sa.DateTime, nullable=False),  # naive UTC
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("stopped_at", sa.DateTime, nullable=True),
        sa.Column("version", sa.String(32), nullable=False, server_default=""),
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime, nullable=True))
        batch.create_index("ix_deliveries_lease", ["status", "lease_until"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("node_id")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_lease")
        batch.drop_column("lease_until")
        batch.drop_column("node_id")
    op.drop_table("nodes")
