"""The service on a database made before schema migrations (tests/fixtures/pre_migration.sql,
by the code of commit dd74305): it refuses to start, `mailsvc check` says why, and after
`mailsvc db upgrade` it starts with the old queue in it.

The fixture is a SQLite dump. On PostgreSQL the same database is made from it: its tables as
SQLAlchemy reflects them (the types that version's ``create_all`` gave on PostgreSQL), then its
rows, with the id sequences moved past them as that version's inserts had left them."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from mailsvc.app import start_service
from mailsvc.cli.db import cmd_db
from mailsvc.cli.main import run_checks
from mailsvc.config import Settings
from mailsvc.storage import schema
from mailsvc.storage.schema import SchemaVersionError
from provisioning.directory import Directory
from tests.conftest import new_pg_database

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pre_migration.sql"


def _pre_migration_sqlite(database: str) -> list[str]:
    """The fixture into a SQLite file; the queue ids of its messages."""
    with sqlite3.connect(database) as db:
        db.executescript(FIXTURE.read_text(encoding="utf-8"))
        return [qid for (qid,) in db.execute("SELECT queue_id FROM messages ORDER BY id")]


async def _pre_migration_postgresql(url: str, scratch: Path) -> list[str]:
    """The fixture's tables and rows on PostgreSQL (see the module's docstring)."""
    queued = _pre_migration_sqlite(str(scratch / "pre_migration.db"))
    lite = create_engine(f"sqlite:///{scratch / 'pre_migration.db'}")
    old = MetaData()
    old.reflect(lite)
    for table in old.tables.values():
        for column in table.columns:
            # SQLite's names (DATETIME, BLOB) back to the model's types, as create_all gave them.
            column.type = column.type.as_generic()
    with lite.connect() as conn:
        rows = {
            name: [dict(r._mapping) for r in conn.execute(t.select())]
            for name, t in old.tables.items()
        }
    lite.dispose()
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(old.create_all)
            for table in old.sorted_tables:
                if rows[table.name]:
                    await conn.execute(table.insert(), rows[table.name])
                if "id" in table.columns and rows[table.name]:
                    await conn.execute(
                        text("SELECT setval(pg_get_serial_sequence(:table, 'id'), :last)"),
                        {"table": table.name, "last": max(r["id"] for r in rows[table.name])},
                    )
    finally:
        await engine.dispose()
    return queued


async def test_the_service_starts_on_a_database_from_before_migrations_after_db_upgrade(
    settings: Settings, directory: Directory, tmp_path: Path
) -> None:
    # Delivery in this process: starting its own is not the point here, and takes seconds.
    settings = settings.with_changes(delivery={"separate_process": False})
    url = make_url(settings.database_url)
    if url.get_backend_name() == "postgresql":
        # An empty database (the fixture's is migrated already), filled as before migrations.
        settings = settings.with_changes(database={"url": new_pg_database()})
        queued = await _pre_migration_postgresql(settings.database_url, tmp_path)
    else:
        # A file of its own: the suite's (tests/integration/conftest.py) is migrated already.
        database = tmp_path / "pre_migration.db"
        settings = settings.with_changes(database={"url": f"sqlite+aiosqlite:///{database}"})
        queued = _pre_migration_sqlite(str(database))

    with pytest.raises(SchemaVersionError, match=r"before schema migrations.*mailsvc db upgrade"):
        await start_service(settings, scheduler=False)
    checks = {name: (ok, detail) for name, ok, detail in await run_checks(settings)}
    assert checks["directory"][0] and checks["mailstore"][0], checks
    ok, detail = checks["database"]
    assert not ok and "mailsvc db upgrade" in detail, detail

    upgrade = argparse.Namespace(action="upgrade")
    assert await asyncio.to_thread(cmd_db, settings, upgrade) == 0
    service = await start_service(settings, scheduler=False)
    try:
        shown = [await service.queue.show(qid) for qid in queued]
        assert [m.mail_from if m else None for m in shown] == ["mieszkaniec@example.org", ""]
        checks = {name: (ok, detail) for name, ok, detail in await run_checks(settings)}
        driver = f"{url.get_backend_name()}+{url.get_driver_name()}"
        ok, detail = checks["database"]
        assert ok and detail.startswith(driver), detail
        assert detail.endswith(f", schema {schema.head()}"), detail
    finally:
        await service.stop()
