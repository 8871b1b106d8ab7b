"""The schema's revision: Alembic migrations (``mailsvc/storage/migrations/``) on the service's
own async engine, each run on one of its connections (``run_sync``).

A fresh, empty database is brought to the head revision by the first start (``ready``); one
at an older revision, or made before migrations (tables but no ``alembic_version``), only by
``mailsvc db upgrade`` (``upgrade``), and until then every start refuses it; one at a revision
this code does not know (a newer version's) is refused too.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateColumn

from mailsvc.errors import MailsvcError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# Alembic (and Mako, which it loads) is imported only where a migration runs or the revisions
# must be walked: the usual case, a database at the head revision, is read with one SELECT, so
# every `mailsvc` command starts about a quarter of a second sooner.

MIGRATIONS = Path(__file__).with_name("migrations")
# The schema create_schema made before migrations (commit dd74305): what a database without
# alembic_version is recognised as.
BASELINE = "0001"
VERSION_TABLE = "alembic_version"
# Tables every mailsvc database has had since its first version: without them a database
# without alembic_version is someone else's, never adopted.
_ALWAYS = frozenset({"messages", "deliveries"})
# PostgreSQL: one schema change at a time across processes (SQLite: BEGIN IMMEDIATE).
_PG_LOCK_KEY = 0x6D61696C737663  # "mailsvc"

T = TypeVar("T")


class Status(enum.Enum):
    EMPTY = "empty"  # no table yet: made at the head revision by the first start
    CURRENT = "current"  # at the head revision
    BEHIND = "behind"  # an older revision: `mailsvc db upgrade`
    UNVERSIONED = "unversioned"  # made before migrations: `mailsvc db upgrade`
    AHEAD = "ahead"  # a revision this code does not know: a newer version's


@dataclass(frozen=True)
class SchemaState:
    status: Status
    current: str | None  # the database's revision (None: none recorded)
    head: str  # the code's


class SchemaVersionError(MailsvcError):
    """The database's schema is not the one this code was written for; says what to do."""


def refusal(state: SchemaState) -> str:
    """Why a start refuses the database, and what the operator does about it."""
    if state.status is Status.AHEAD:
        return (
            f"the database schema is at revision {state.current}, which this version of "
            f"mailsvc does not know (its newest is {state.head}): a newer version upgraded it; "
            "run that version, or restore the backup made before the upgrade"
        )
    if state.status is Status.UNVERSIONED:
        found = "the database was made before schema migrations (no alembic_version table)"
    else:
        found = (
            f"the database schema is at revision {state.current}, older than this version's "
            f"{state.head}"
        )
    return f"{found}: back it up, then run `mailsvc db upgrade` before starting mailsvc"


def alembic_config(location: Path, connection: Connection | None = None) -> Config:
    """Alembic's configuration, made here rather than read from an alembic.ini: where the
    scripts are, how a new revision's file is named, the connection env.py runs on."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def scripts(location: Path = MIGRATIONS) -> ScriptDirectory:
    """The revisions (read once per process: they do not change under a running service)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(location))


_ASSIGNED = re.compile(
    r"""^(revision|down_revision)(?:\s*:[^=\n]+)?\s*=\s*(?:None|["']([^"'\n]+)["'])\s*$""",
    re.MULTILINE,
)


@functools.cache
def _declared(location: Path) -> tuple[str, frozenset[str]] | None:
    """(head, every revision) read from the scripts' ``revision = "…"`` and
    ``down_revision = "…"`` lines, without loading Alembic; None when the history is not one
    plain line of such assignments (a merge, a branch, another form): Alembic judges then."""
    downs: dict[str, str | None] = {}
    for path in (location / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        found = dict((m.group(1), m.group(2)) for m in _ASSIGNED.finditer(path.read_text("utf-8")))
        if "revision" not in found or "down_revision" not in found or found["revision"] is None:
            return None
        downs[found["revision"]] = found["down_revision"]
    heads = set(downs) - set(downs.values())
    if len(heads) != 1 or list(downs.values()).count(None) != 1:
        return None
    return heads.pop(), frozenset(downs)


def head(location: Path = MIGRATIONS) -> str:
    """The newest revision (``test_the_revisions_read_without_alembic_are_alembics`` holds the
    quick reading to Alembic's own)."""
    declared = _declared(location)
    if declared is not None:
        return declared[0]
    found = scripts(location).get_current_head()
    assert found is not None, f"no revision under {location}"
    return found


def _known(location: Path) -> frozenset[str]:
    declared = _declared(location)
    if declared is not None:
        return declared[1]
    return frozenset(s.revision for s in scripts(location).walk_revisions())


def _version_row(conn: Connection) -> str | None:
    """The revision recorded in alembic_version (one row; none: None), as Alembic reads it."""
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:  # several heads: only Alembic's own walk can judge
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()
    return rows[0] if rows else None


def read_state(conn: Connection, location: Path = MIGRATIONS) -> SchemaState:
    tables = set(inspect(conn).get_table_names())
    code_head = head(location)
    current = None
    if VERSION_TABLE in tables:
        current = _version_row(conn)
    if current is None:
        status = Status.UNVERSIONED if tables - {VERSION_TABLE} else Status.EMPTY
    elif current == code_head:
        status = Status.CURRENT
    elif current in _known(location):
        status = Status.BEHIND
    else:
        status = Status.AHEAD
    return SchemaState(status, current, code_head)


async def state(engine: AsyncEngine, location: Path = MIGRATIONS) -> SchemaState:
    async with engine.connect() as conn:
        return await conn.run_sync(read_state, location)


async def ready(engine: AsyncEngine, location: Path = MIGRATIONS) -> None:
    """What every start does: a fresh database is made at the head revision, one at the head
    is used as it is, any other refused (SchemaVersionError, saying what to do)."""
    found = await state(engine, location)
    if found.status is Status.EMPTY:
        found = await _locked(engine, functools.partial(_create, location=location))
    if found.status is not Status.CURRENT:
        raise SchemaVersionError(refusal(found))


async def upgrade(engine: AsyncEngine, location: Path = MIGRATIONS) -> SchemaState:
    """``mailsvc db upgrade``: the database brought to the head revision in one transaction;
    one made before migrations is first checked against the baseline and stamped with it.
    Returns the state found before."""
    return await _locked(engine, functools.partial(_upgrade, location=location))


def _create(conn: Connection, location: Path) -> SchemaState:
    found = read_state(conn, location)  # again, under the lock: another process may have won
    if found.status is Status.EMPTY:
        from alembic import command

        command.upgrade(alembic_config(location, conn), "head")
        return read_state(conn, location)
    return found


def _upgrade(conn: Connection, location: Path) -> SchemaState:
    found = read_state(conn, location)
    if found.status is Status.AHEAD:
        raise SchemaVersionError(refusal(found))
    from alembic import command

    config = alembic_config(location, conn)
    if found.status is Status.UNVERSIONED:
        _adopt(conn, location)
        command.stamp(config, BASELINE)
    if found.status is not Status.CURRENT:
        command.upgrade(config, "head")
    return found


def _adopt(conn: Connection, location: Path) -> None:
    """Take a database made before migrations as the baseline: what an older version's
    start-up would still have added (tables, nullable or defaulted columns, indexes) is added
    as it did, then the tables must match the baseline exactly."""
    tables = set(inspect(conn).get_table_names())
    if not _ALWAYS <= tables:
        raise SchemaVersionError(
            f"the database has tables ({', '.join(sorted(tables))}) but not mailsvc's queue "
            f"({', '.join(sorted(_ALWAYS))}): not a mailsvc database? check database.url"
        )
    module = scripts(location).get_revision(BASELINE).module
    baseline: MetaData = module.baseline()
    baseline.create_all(conn, checkfirst=True)
    inspector = inspect(conn)
    for table in baseline.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    differences = compare_metadata(MigrationContext.configure(conn), baseline)
    if differences:
        listed = "; ".join(str(d) for d in differences[:10])
        raise SchemaVersionError(
            f"the database was made before schema migrations but its tables differ from the "
            f"baseline (revision {BASELINE}), so it is left as it was: {listed}"
        )


async def _locked(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """``work`` in one transaction that holds the database's write lock (SQLite) or the
    schema lock (PostgreSQL), committed only if it all succeeds.

    SQLite: foreign keys are off meanwhile (a batch migration copies a table, drops the old
    one and renames the copy; with them on, the drop would cascade into the rows that point
    at it) and checked before the commit instead; the driver's own transaction handling is
    off too, so the DDL is inside the transaction rather than committed statement by
    statement."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await conn.run_sync(_sqlite_locked, work)
        return await conn.run_sync(_transaction, work)


def _sqlite_locked(conn: Connection, work: Callable[[Connection], T]) -> T:
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise SchemaVersionError(
                    f"the schema change left rows pointing at missing ones ({broken[:5]}); "
                    "nothing was changed"
                )
        except BaseException:
            with contextlib.suppress(OperationalError):  # SQLite may have rolled back itself
                conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")
        return result
    finally:
        try:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        except OperationalError:
            conn.invalidate()  # never back into the pool with foreign keys off


def _transaction(conn: Connection, work: Callable[[Connection], T]) -> T:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    try:
        result = work(conn)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return result
