"""Several nodes, one set of files: the files every node needs but one node makes (DKIM keys,
the token-signing and cookie keys, the evidence certificate and key, the Dovecot master
secret, documents and their encoded parts, spooled bodies), kept in the database by the node
that makes them and fetched by the others (PostgreSQL only; SQLite nodes keep files only).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shared_files",
        # The file's path under var_dir, "/"-separated: secrets/dkim-mail.pem, spool/<name>...
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False),  # naive UTC
    )


def downgrade() -> None:
    op.drop_table("shared_files")
