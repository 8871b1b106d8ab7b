"""Schema migrations on real SQLite files: the head revision is exactly the tables of
``mailsvc.storage.tables`` (a column added without a migration fails here), a database made
before migrations (tests/fixtures/pre_migration.sql, by the code of commit dd74305) is brought
to the head by ``mailsvc db upgrade`` with every row, databases at another revision are
refused until then (a newer one naming both revisions), and a later revision runs on SQLite in
one transaction, its batch copy of a table taking no rows with it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as sync_engine

from mailsvc.cli.main import main
from mailsvc.storage import schema
from mailsvc.storage.db import create_engine, create_schema
from mailsvc.storage.schema import SchemaVersionError, Status
from mailsvc.storage.tables import metadata

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pre_migration.sql"
HEAD = schema.head()

Cli = Callable[..., tuple[int, str, str]]


def differences(path: Path) -> list[Any]:
    """What Alembic's autogenerate would still write: the database against the tables."""
    engine = sync_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every mailsvc table the database has, in id order."""
    found = {}
    with sqlite3.connect(path) as db:
        present = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        for table in metadata.sorted_tables:  # names from the tables module, not from input
            if table.name not in present:  # a table of a later revision than the fixture's
                continue
            query = f"SELECT * FROM {table.name} ORDER BY 1, 2"  # noqa: S608
            found[table.name] = db.execute(query).fetchall()
    return found


def revision(path: Path) -> str | None:
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if found is None else str(found[0])


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    """``mailsvc …`` in this process on the test's own database (tmp_path/mailsvc.db)."""
    for name in list(os.environ):
        if name.startswith("MAILSVC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILSVC_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MAILSVC_DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path / 'mailsvc.db'}")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(list(args))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    yield run


async def fresh(path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await create_schema(engine)
    finally:
        await engine.dispose()


async def test_a_fresh_database_is_made_at_the_head_exactly_as_the_tables_say(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mailsvc.db"
    # Two processes starting on the same empty file at once: one makes it, the other uses it.
    await asyncio.gather(fresh(path), fresh(path))
    assert revision(path) == HEAD
    # A column, table or index added to mailsvc/storage/tables.py without its migration shows
    # up here: python -m mailsvc.storage.migrations "what changed" writes one.
    assert differences(path) == []


async def test_a_database_from_before_migrations_is_upgraded_with_every_row(
    tmp_path: Path, cli: Cli
) -> None:
    path = tmp_path / "mailsvc.db"
    with sqlite3.connect(path) as db:
        db.executescript(FIXTURE.read_text(encoding="utf-8"))
    before = rows(path)
    assert all(before.values()), {name: len(found) for name, found in before.items()}

    status, out, _ = await asyncio.to_thread(cli, "db", "status")
    assert status == 1 and "mailsvc db upgrade" in out, out
    # Any other command refuses it, saying what to do, and leaves it as it was.
    status, _, err = await asyncio.to_thread(cli, "web", "token", "list")
    assert status == 1
    assert "made before schema migrations" in err and "mailsvc db upgrade" in err, err
    assert rows(path) == before

    status, out, _ = await asyncio.to_thread(cli, "db", "upgrade")
    assert status == 0, out
    assert f"rozpoznana jako wersja {schema.BASELINE}" in out and HEAD in out, out
    assert revision(path) == HEAD
    after = rows(path)
    assert after.pop("job_runs") == []  # revision 0002's table, new and empty
    assert after.pop("nodes") == []  # revision 0003's table, new and empty
    assert after.pop("shared_files") == []  # revision 0004's table, new and empty
    # Revision 0003's columns, added at the end and empty on every existing row.
    for table, added in (("messages", 1), ("deliveries", 2)):
        assert all(row[-added:] == (None,) * added for row in after[table]), table
        after[table] = [row[:-added] for row in after[table]]
    assert after == before
    assert differences(path) == []
    status, out, _ = await asyncio.to_thread(cli, "web", "token", "list")
    assert status == 0 and "bip-integration" in out, out
    status, out, _ = await asyncio.to_thread(cli, "db", "upgrade")
    assert status == 0 and "nic nie zmieniono" in out, out


async def test_a_database_of_a_newer_version_is_refused_naming_both_revisions(
    tmp_path: Path, cli: Cli
) -> None:
    path = tmp_path / "mailsvc.db"
    await fresh(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '0999'")
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(SchemaVersionError, match=f"revision 0999.*newest is {HEAD}"):
            await create_schema(engine)
    finally:
        await engine.dispose()
    status, _, err = await asyncio.to_thread(cli, "db", "upgrade")
    assert status == 1 and "0999" in err and HEAD in err, err
    assert revision(path) == "0999"
    status, out, _ = await asyncio.to_thread(cli, "db", "status")
    assert status == 1 and "0999" in out and HEAD in out, out


# A later revision, for this test only: SQLite cannot add a NOT NULL column to a table or
# change a column in place, so the batch block copies ``messages`` (which ``deliveries``
# points at, ON DELETE CASCADE) into a new table, drops the old one and renames the copy.
SECOND = """
import sqlalchemy as sa
from alembic import op

revision = "{head}test"
down_revision = "{head}"


def upgrade() -> None:
    with op.batch_alter_table("messages", recreate="always") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
        batch.alter_column("client", existing_type=sa.Text, nullable=True)
    {fail}
"""


def later_revision(tmp_path: Path, *, fail: bool = False) -> Path:
    location = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    raise_it = 'raise RuntimeError("the revision fails after its change")' if fail else ""
    text = SECOND.format(head=HEAD, fail=raise_it)
    (location / "versions" / "v9999_test.py").write_text(text, encoding="utf-8")
    return location


async def upgraded_fixture(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(FIXTURE.read_text(encoding="utf-8"))
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await schema.upgrade(engine)
    finally:
        await engine.dispose()


async def test_a_later_revision_runs_with_a_batch_copy_and_keeps_every_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mailsvc.db"
    await upgraded_fixture(path)
    before = rows(path)
    location = later_revision(tmp_path)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(SchemaVersionError, match=f"revision {HEAD}, older.*db upgrade"):
            await schema.ready(engine, location)
        assert (await schema.upgrade(engine, location)).status is Status.BEHIND
        await schema.ready(engine, location)  # now a start takes it
    finally:
        await engine.dispose()
    assert revision(path) == f"{HEAD}test"
    after = rows(path)
    assert after["messages"] == [(*row, 0) for row in before["messages"]]
    assert {k: v for k, v in after.items() if k != "messages"} == {
        k: v for k, v in before.items() if k != "messages"
    }
    with sqlite3.connect(path) as db:
        # The foreign key to the copied table still holds, and still cascades.
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("DELETE FROM messages")
        assert db.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)


async def test_a_revision_that_fails_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "mailsvc.db"
    await upgraded_fixture(path)
    before = rows(path)
    location = later_revision(tmp_path, fail=True)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(RuntimeError, match="fails after its change"):
            await schema.upgrade(engine, location)
        assert (await schema.state(engine, location)).current == HEAD
        # The pooled connection is back to foreign keys on.
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).one() == (1,)
    finally:
        await engine.dispose()
    assert rows(path) == before
    assert differences(path) == []  # no priority column, client still NOT NULL


def _alembics(location: Path) -> tuple[str | None, set[str]]:
    scripts = ScriptDirectory.from_config(schema.alembic_config(location))
    return scripts.get_current_head(), {s.revision for s in scripts.walk_revisions()}


def test_the_revisions_read_without_alembic_are_alembics(tmp_path: Path) -> None:
    # The shipped history, and one with a later revision whose file name says nothing.
    for location in (schema.MIGRATIONS, later_revision(tmp_path / "later")):
        expected_head, expected_known = _alembics(location)
        assert (schema.head(location), set(schema._known(location))) == (
            expected_head,
            expected_known,
        )
    assert schema.head(later_revision(tmp_path / "again")) == f"{HEAD}test"


def test_a_history_that_is_not_one_plain_line_is_left_to_alembic(tmp_path: Path) -> None:
    location = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    versions = location / "versions"
    before = str(int(HEAD) - 1).zfill(4)
    plain = "revision = {rev!r}\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n"
    body = "\n\ndef upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    branch = plain.format(rev="b" + HEAD, down=repr(before)) + body
    (versions / "v9998_branch.py").write_text(branch, encoding="utf-8")
    merge = plain.format(rev="merged", down=repr((HEAD, "b" + HEAD))) + body
    (versions / "v9999_merge.py").write_text(merge, encoding="utf-8")
    assert schema._declared(location) is None  # the tuple: not read by the quick reading
    assert schema.head(location) == "merged" == _alembics(location)[0]
    assert set(schema._known(location)) == _alembics(location)[1]


def test_a_command_starts_without_loading_alembic() -> None:
    # The CLI's import, and a look at a database at the head, read the revision with one
    # SELECT: Alembic (and Mako) load only when a migration runs.
    probe = (
        "import asyncio, sys, tempfile\n"
        "import mailsvc.cli.main\n"
        "from mailsvc.storage.db import create_engine\n"
        "from mailsvc.storage import schema\n"
        "loaded_at_import = 'alembic' in sys.modules\n"
        "async def look(path):\n"
        "    engine = create_engine(f'sqlite+aiosqlite:///{path}')\n"
        "    try:\n"
        "        await schema.ready(engine)\n"
        "        return await schema.state(engine)\n"
        "    finally:\n"
        "        await engine.dispose()\n"
        "path = sys.argv[1]\n"
        "asyncio.run(look(path))  # a fresh database: made by Alembic's upgrade\n"
        "for name in [m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')]:\n"
        "    del sys.modules[name]\n"
        "state = asyncio.run(look(path))  # at the head now: no Alembic\n"
        "print(loaded_at_import, state.status.value, 'alembic' in sys.modules)\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run(
            [sys.executable, "-c", probe, str(Path(folder) / "mailsvc.db")],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.split()
    assert out == ["False", "current", "False"]
