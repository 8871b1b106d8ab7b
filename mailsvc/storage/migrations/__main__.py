"""``python -m mailsvc.storage.migrations "what changed"``: a new revision in ``versions/``,
written by Alembic's autogenerate from the difference between the head schema (every
migration run on a scratch SQLite file) and ``mailsvc.storage.tables``. For developers, in a
checkout: read it and finish it before committing (data moves, SQLite batch blocks)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy.engine import Connection

from mailsvc.storage import schema
from mailsvc.storage.db import create_engine


def _revise(conn: Connection, message: str) -> None:
    number = int(schema.head()) + 1
    config = schema.alembic_config(schema.MIGRATIONS, conn)
    command.revision(config, message=message, autogenerate=True, rev_id=f"{number:04d}")


async def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(scratch) / 'head.db'}")
        try:
            await schema.ready(engine)
            async with engine.connect() as conn:
                await conn.run_sync(_revise, message)
        finally:
            await engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    asyncio.run(main(sys.argv[1]))
