"""Files every node needs but one node makes, shared through the database (PostgreSQL).

A node keeps its files under its own ``var_dir``; with several nodes on one PostgreSQL
database, the files another node may need are also written to the ``shared_files`` table,
named by their path under var_dir (``secrets/receipts-key``, ``documents/ab/ab12…``,
``documents/parts/<name>``, ``spool/<name>``), by the node that makes them, and written back to
disk by a node that lacks one when it needs it:

- secrets made once (the token-signing key, the web cookie key, the Dovecot master secret, the
  self-signed evidence certificate and its password, DKIM keys under var_dir): ``sync`` at
  start-up, under a transaction-level advisory lock so that two nodes starting at once on a
  fresh database do not make two different keys — the first one's are everybody's;
- documents and their encoded parts: published when stored or encoded, fetched before use;
- spooled inbound bodies: published before the message is accepted (250), so that another
  node's delivery worker can deliver it when the node that took it is gone.

Who can read them: whoever can log in as the service's database role — the same trust as the
queue, which holds every message body. On SQLite (one node) nothing is shared: files only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import bindparam, delete, or_, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import shared_files

log = logging.getLogger(__name__)

# The transaction-level advisory lock of the start-up sync ("shar", 1).
SYNC_LOCK = (0x73686172, 1)
# A file is stored in rows of at most this many bytes (the first row under the file's name, the
# next ones under ``name#chunkN``), read and written one row at a time: publishing or fetching
# a 20 MB spooled body holds one chunk in memory, not the body.
CHUNK = 256 * 1024
_CHUNK_MARK = "#chunk"


def chunk_name(name: str, index: int) -> str:
    """The row of a file's ``index``-th chunk (0: the file's own name)."""
    return name if index == 0 else f"{name}{_CHUNK_MARK}{index}"


def file_of_row(name: str) -> str:
    """The file a row belongs to."""
    return name.split(_CHUNK_MARK, 1)[0]


def _write_private(path: Path, content: bytes) -> None:
    """Write ``content`` at ``path`` atomically, mode 0600, its directories 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Its own temporary name (mode 0600): several workers may fetch the same file at once.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class SharedFiles:
    """The shared copies of one node's files (does nothing unless the database is PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, var_dir: Path, node: str = "") -> None:
        self.engine = engine
        self.var_dir = var_dir
        self.node = node
        self.enabled = engine.dialect.name == "postgresql"

    def name_of(self, path: Path) -> str | None:
        """The shared name of a file under var_dir; None for a file elsewhere."""
        try:
            return path.absolute().relative_to(self.var_dir.absolute()).as_posix()
        except ValueError:
            return None

    def path_of(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"bad shared file name {name!r}")
        return self.var_dir / name

    async def _insert(self, conn: AsyncConnection, name: str, content: bytes) -> None:
        await conn.execute(
            postgresql.insert(shared_files)
            .on_conflict_do_nothing(index_elements=["name"])
            .values(
                name=name,
                content=content,
                sha256=hashlib.sha256(content).hexdigest(),
                size=len(content),
                node_id=self.node,
                created_at=utcnow(),
            )
        )

    async def publish(self, paths: Iterable[Path], conn: AsyncConnection | None = None) -> int:
        """Put these files (under var_dir) in the database unless they are there already (a
        file's content is fixed once published), a chunk at a time; ``conn``: in the caller's
        transaction. Returns how many were offered."""
        if not self.enabled:
            return 0
        found = [(name, path) for path in paths if (name := self.name_of(path)) is not None]
        if not found:
            return 0
        if conn is not None:
            for name, path in found:
                await self._publish_file(conn, name, path)
        else:
            async with self.engine.begin() as own:
                for name, path in found:
                    await self._publish_file(own, name, path)
        return len(found)

    async def _publish_file(self, conn: AsyncConnection, name: str, path: Path) -> None:
        fh = await asyncio.to_thread(path.open, "rb")
        try:
            index = 0
            while True:
                chunk = await asyncio.to_thread(fh.read, CHUNK)
                if index > 0 and not chunk:
                    return
                await self._insert(conn, chunk_name(name, index), chunk)
                index += 1
                if len(chunk) < CHUNK:
                    return
        finally:
            await asyncio.to_thread(fh.close)

    async def fetch(self, paths: Iterable[Path]) -> list[Path]:
        """Write back the files among ``paths`` that are missing here from their shared copy;
        returns those still missing (not shared either)."""
        wanted: dict[str, Path] = {}
        for path in paths:
            if path.exists():
                continue
            name = self.name_of(path)
            if name is None or not self.enabled:
                wanted[str(path)] = path
                continue
            wanted[name] = path
        if not wanted or not self.enabled:
            return list(wanted.values())
        async with self.engine.connect() as conn:
            for name in list(wanted):
                if await self._fetch_file(conn, name, wanted[name]):
                    del wanted[name]
                    log.info("shared file %s fetched from the database", name)
        return list(wanted.values())

    async def _fetch_file(self, conn: AsyncConnection, name: str, path: Path) -> bool:
        """Write ``name``'s chunks to ``path`` (atomically, 0600); False: not shared."""
        query = select(shared_files.c.content).where(shared_files.c.name == bindparam("row"))
        first = (await conn.execute(query, {"row": name})).scalar_one_or_none()
        if first is None:
            return False
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
        fd, tmp = await asyncio.to_thread(
            tempfile.mkstemp, dir=path.parent, prefix=f".{path.name}."
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                chunk: bytes | None = bytes(first)
                index = 0
                while chunk is not None:
                    await asyncio.to_thread(fh.write, chunk)
                    if len(chunk) < CHUNK:
                        break
                    index += 1
                    row = await conn.execute(query, {"row": chunk_name(name, index)})
                    found = row.scalar_one_or_none()
                    chunk = bytes(found) if found is not None else None
                await asyncio.to_thread(fh.flush)
                await asyncio.to_thread(os.fsync, fh.fileno())
            await asyncio.to_thread(os.replace, tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return True

    async def fetch_parts(self, parts_json: str | None) -> None:
        """Before a message with parts on disk is delivered: fetch those this node lacks
        (spooled by another node, or a distribution's parts encoded there)."""
        if parts_json is None or not self.enabled:
            return
        data = json.loads(parts_json)
        if "spool" in data:
            names = [f"spool/{data['spool']}"]
        else:
            names = [f"documents/parts/{name}" for name in data.get("files", ())]
        await self.fetch([self.path_of(name) for name in names])

    async def forget(self, names: Sequence[str]) -> int:
        """Remove shared copies no longer needed (a spooled body delivered everywhere)."""
        if not names or not self.enabled:
            return 0
        rows = or_(
            shared_files.c.name.in_(names),
            *(shared_files.c.name.startswith(n + _CHUNK_MARK, autoescape=True) for n in names),
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(shared_files).where(rows))
        return int(result.rowcount or 0)

    async def forget_spool(self, in_use: set[str], older_than: float) -> int:
        """Remove the shared copies of spooled bodies no kept message names any more (their
        message delivered or expired), once older than ``older_than`` seconds (a copy is
        published just before its message is queued). Returns how many went."""
        if not self.enabled:
            return 0
        cutoff = utcnow() - timedelta(seconds=older_than)
        async with self.engine.begin() as conn:
            names = (
                await conn.execute(
                    select(shared_files.c.name).where(
                        shared_files.c.name.like("spool/%"), shared_files.c.created_at < cutoff
                    )
                )
            ).scalars()
            gone = [n for n in names if file_of_row(n).removeprefix("spool/") not in in_use]
            if gone:
                await conn.execute(delete(shared_files).where(shared_files.c.name.in_(gone)))
        return len(gone)

    async def sync(self, paths: Sequence[Path], make_missing: Callable[[], object]) -> None:
        """At start-up: the files every node must have the same of (the secrets). Under one
        lock for all nodes: the database's copies are written here (they win over a different
        local one, which is logged), then ``make_missing`` makes what nobody has yet (in a
        thread), and this node's copies of the rest are published."""
        if not self.enabled:  # SQLite: each secret is made where and when it is first used
            return
        names = {n: p for p in paths if (n := self.name_of(p)) is not None}
        async with self.engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": SYNC_LOCK[0], "b": SYNC_LOCK[1]}
            )
            rows = (
                await conn.execute(
                    select(shared_files.c.name, shared_files.c.content).where(
                        shared_files.c.name.in_(list(names))
                    )
                )
            ).all()
            for row in rows:
                path = names.pop(row.name)
                content = bytes(row.content)
                local = await asyncio.to_thread(_read, path)
                if local == content:
                    continue
                if local is not None:
                    log.warning(
                        "%s differs from the copy the other nodes use: replaced by it", path
                    )
                await asyncio.to_thread(_write_private, path, content)
            await asyncio.to_thread(make_missing)
            for name, path in names.items():
                mine = await asyncio.to_thread(_read, path)
                if mine is not None:
                    await self._insert(conn, name, mine)
                    log.info("shared file %s published for the other nodes", name)
