"""The database and the queue's spooled bodies, taken at one moment while the service runs.

A queued message whose body is large keeps it in a file under ``<var_dir>/spool/`` that the
delivery worker removes once the message is settled (``messages.status`` becomes "done"). So the
snapshot must hold, for every message still queued in it, that message's file: the files are
hard-linked (immutable once written) while writers are held back for the few milliseconds it
takes, with a read snapshot of the database opened at that same moment and copied afterwards,
writers running again.

- SQLite (WAL): one connection takes the write lock (``BEGIN IMMEDIATE``; the service's writers
  wait on their busy timeout), a second opens its read snapshot and names the spool files,
  they are linked, the lock goes, and the second connection's snapshot is copied with SQLite's
  online backup API (``sqlite3.Connection.backup``: one step, inside that read transaction).
- PostgreSQL: ``LOCK TABLE messages IN SHARE MODE`` holds back the writes that settle or add
  messages, a REPEATABLE READ transaction exports its snapshot, the files are linked, the lock
  goes, and ``pg_dump --snapshot`` dumps exactly that snapshot (custom format).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, make_url

from mailsvc.backup.archive import BackupError
from mailsvc.config import Settings
from mailsvc.stack import LocalStack, StackError
from mailsvc.stack.postgres import tool
from mailsvc.storage.db import BUSY_TIMEOUT, create_engine, private_database_file
from mailsvc.storage.spool import spool_name, spool_path

SQLITE_MEMBER = "database/mailsvc.db"
POSTGRES_MEMBER = "database/mailsvc.pgdump"
# The messages whose spooled body is still needed (as MailQueue.spool_files_in_use asks).
_SPOOL_QUERY = "SELECT parts FROM messages WHERE parts LIKE '%\"spool\"%' AND body IS NOT NULL"
_DUMP_TIMEOUT = 6 * 3600.0


@dataclass
class Snapshot:
    kind: str  # "sqlite" | "postgresql"
    member: str
    file: Path
    spool: list[Path] = field(default_factory=list)  # linked copies, in the staging directory
    missing_spool: list[str] = field(default_factory=list)  # named by a message, not on disk


def database_kind(settings: Settings) -> str:
    backend = make_url(settings.database_url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"database.url: cannot back up a {backend} database")
    return backend


def sqlite_file(settings: Settings) -> Path:
    database = make_url(settings.database_url).database
    if not database or database == ":memory:":
        raise BackupError("database.url names an in-memory SQLite database: nothing to back up")
    return Path(database)


async def take(settings: Settings, staging: Path) -> Snapshot:
    """The database (a file in ``staging``) and the spool files its queued messages name."""
    if database_kind(settings) == "sqlite":
        return await asyncio.to_thread(_sqlite, sqlite_file(settings), settings.var_dir, staging)
    return await _postgres(settings, staging)


def _link_spool(var_dir: Path, names: list[str], staging: Path, snap: Snapshot) -> None:
    directory = staging / "spool"
    directory.mkdir(mode=0o700, exist_ok=True)
    for name in sorted(set(names)):
        source = spool_path(var_dir, name)
        target = directory / name
        try:
            os.link(source, target)
        except FileNotFoundError:
            snap.missing_spool.append(name)
            continue
        except OSError:  # another file system or protected hard links: a copy then
            shutil.copy2(source, target)
        snap.spool.append(target)


# -- SQLite ---------------------------------------------------------------------------------


def _sqlite(database: Path, var_dir: Path, staging: Path) -> Snapshot:
    if not database.is_file():
        raise BackupError(f"there is no database at {database} (database.url)")
    uri = f"{database.absolute().as_uri()}?mode=rw"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT)

    snap = Snapshot("sqlite", SQLITE_MEMBER, staging / "mailsvc.db")
    locker, reader = connect(), connect()
    try:
        locker.execute("BEGIN IMMEDIATE")
        try:
            reader.execute("BEGIN")
            tables = {r[0] for r in reader.execute("SELECT name FROM sqlite_master")}
            names: list[str] = []
            if "messages" in tables:
                names = [n for (p,) in reader.execute(_SPOOL_QUERY) if (n := spool_name(p))]
            _link_spool(var_dir, names, staging, snap)
        finally:
            locker.execute("ROLLBACK")
        os.close(os.open(snap.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        target = sqlite3.connect(snap.file)
        try:
            reader.backup(target)  # uses the reader's open snapshot
            # One self-contained file: the copy leaves WAL mode (the service sets it again).
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
        reader.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise BackupError(f"could not copy the database {database}: {exc}") from exc
    finally:
        locker.close()
        reader.close()
    return snap


def restore_sqlite(staged: Path, settings: Settings) -> Path:
    """Put the saved database where database.url says (refused if a database is there)."""
    target = sqlite_file(settings)
    for path in (target, target.with_name(target.name + "-wal")):
        if path.exists():
            raise BackupError(
                f"a database already exists at {path}; restore writes only where there is none: "
                "move it away first"
            )
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.move(staged, target)
    private_database_file(str(target))
    return target


# -- PostgreSQL -----------------------------------------------------------------------------


def libpq_environment(url: URL) -> dict[str, str]:
    """The connection as libpq's environment variables (pg_dump, pg_restore): the password
    never appears on a command line."""
    env = dict(os.environ)
    values = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    query = dict(url.query)
    if "host" in query:  # a Unix socket directory (?host=/run/postgresql)
        values["PGHOST"] = str(query["host"])
    mode = query.get("sslmode") or query.get("ssl")
    if mode:
        values["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(str(mode), str(mode))
    env.update({k: v for k, v in values.items() if v})
    return env


async def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except FileNotFoundError:
        raise BackupError(
            f"{argv[0]} is not installed; it is needed to {what} "
            "(apt-get install postgresql-client, or set stack.postgres_bin)"
        ) from None
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), _DUMP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BackupError(f"{argv[0]} did not finish within {_DUMP_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        detail = output.decode("utf-8", "replace").strip()[-2000:]
        raise BackupError(f"{argv[0]} failed ({proc.returncode}) to {what}:\n{detail}")


async def _postgres(settings: Settings, staging: Path) -> Snapshot:
    url = make_url(settings.database_url)
    snap = Snapshot("postgresql", POSTGRES_MEMBER, staging / "mailsvc.pgdump")
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as locker, engine.connect() as reader:
            await locker.execute(text("LOCK TABLE messages IN SHARE MODE"))
            reader = await reader.execution_options(isolation_level="REPEATABLE READ")
            snapshot_id = (await reader.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
            rows = (await reader.execute(text(_SPOOL_QUERY))).scalars()
            names = [n for p in rows if (n := spool_name(p))]
            try:
                await asyncio.to_thread(_link_spool, settings.var_dir, names, staging, snap)
            finally:
                await locker.rollback()
            # The exporting transaction stays open while pg_dump imports its snapshot.
            argv = [
                tool(settings, "pg_dump"),
                "--format=custom",
                f"--snapshot={snapshot_id}",
                f"--file={snap.file}",
            ]
            await _run(argv, libpq_environment(url), "dump the database")
            await reader.rollback()
    except BackupError:
        raise
    except Exception as exc:  # any driver error: the backup fails, saying why
        raise BackupError(f"could not read the PostgreSQL database: {exc}") from exc
    finally:
        await engine.dispose()
    with contextlib.suppress(FileNotFoundError):
        snap.file.chmod(0o600)
    return snap


async def check_postgres_empty(settings: Settings) -> None:
    """Refuse a PostgreSQL database that already holds mailsvc's tables."""
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    except Exception as exc:  # any driver error: say which database and why
        raise BackupError(f"cannot reach the PostgreSQL database (database.url): {exc}") from exc
    finally:
        await engine.dispose()
    if "messages" in tables:
        raise BackupError(
            "the PostgreSQL database of database.url already holds mailsvc's tables; restore "
            "writes only into an empty database: create a new one or drop them first"
        )


def stack_cluster(settings: Settings) -> bool:
    """Whether the database is the stack's own PostgreSQL cluster (under var_dir)."""
    return settings.stack.database == "postgresql" and not settings.database.url


async def restore_into_stack_cluster(staged: Path, settings: Settings) -> None:
    """Create the stack's cluster in the restored var_dir, pg_restore into its database
    mailsvc, and stop it again."""
    stack = LocalStack(settings)
    try:
        await asyncio.to_thread(stack.start_service, "postgres")
        try:
            await restore_postgres(staged, settings)
        finally:
            await asyncio.to_thread(stack.stop_service, "postgres")
    except StackError as exc:
        raise BackupError(f"could not run the stack's PostgreSQL cluster: {exc}") from exc


async def restore_postgres(staged: Path, settings: Settings) -> None:
    """pg_restore into the configured database (checked empty by check_postgres_empty)."""
    argv = [
        tool(settings, "pg_restore"),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        f"--dbname={make_url(settings.database_url).database}",
        str(staged),
    ]
    await _run(argv, libpq_environment(make_url(settings.database_url)), "restore the database")
