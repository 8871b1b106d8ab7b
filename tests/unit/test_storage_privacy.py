"""The queue database and the document store are private to the service, and deleted mail is
overwritten in the database file (secure_delete) on every connection."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from mailsvc.distribution.documents import store_document
from mailsvc.relay.delivery.body import documents_dir, encode_part, parts_dir
from mailsvc.storage.db import create_engine, create_schema
from mailsvc.storage.units import ThreadUnits


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The most permissive umask: the modes must come from the code, not from the caller."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_database_and_its_wal_and_shm_are_0600(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "var" / "mailsvc.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await create_schema(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA secure_delete"))).scalar() == 1
            assert mode(path) == 0o600
            assert mode(Path(f"{path}-wal")) == 0o600
            assert mode(Path(f"{path}-shm")) == 0o600
    finally:
        await engine.dispose()


async def test_an_existing_world_readable_database_is_tightened(
    tmp_path: Path, loose_umask: None
) -> None:
    path = tmp_path / "q.db"
    path.touch(mode=0o644)
    units = ThreadUnits(str(path))
    try:
        assert await units.run(lambda c: c.exec_driver_sql("PRAGMA secure_delete").scalar()) == 1
        assert mode(path) == 0o600
    finally:
        await units.close()


def test_documents_and_parts_are_0700_directories_of_0600_files(
    tmp_path: Path, loose_umask: None
) -> None:
    source = tmp_path / "agenda.pdf"
    source.write_bytes(b"%PDF-1.4 agenda\n")
    _, stored = store_document(tmp_path / "var", source)
    name = encode_part(source, b"Content-Type: application/pdf\r\n", tmp_path / "var")

    root = documents_dir(tmp_path / "var")
    assert mode(root) == 0o700
    assert mode(stored.parent) == 0o700 and mode(stored) == 0o600
    assert mode(parts_dir(tmp_path / "var")) == 0o700
    assert mode(parts_dir(tmp_path / "var") / name) == 0o600
