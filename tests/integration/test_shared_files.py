"""Files one node makes and every node needs, shared through PostgreSQL: the secrets are the
same on every node (also when two start at once on a fresh database), a document attached on
one node is there for another, and a body spooled by one node is delivered by another. On
SQLite nothing is shared (files only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailsvc.app import Parts, open_database, share_secrets, shared_secret_paths, start_service
from mailsvc.config import Settings
from mailsvc.distribution.documents import document_path
from mailsvc.receipts.tokens import TokenSigner
from mailsvc.storage.db import create_engine, create_schema
from mailsvc.storage.shared_files import CHUNK, SharedFiles, chunk_name
from mailsvc.storage.tables import shared_files
from provisioning.directory import Directory
from tests.conftest import new_pg_database
from tests.integration.cluster_nodes import first_node, other_node
from tests.integration.conftest import make_message, smtp_send, wait_for_inbox
from tests.integration.test_distribution_flow import session_with_pdf

# Several nodes on one PostgreSQL whatever the suite's database: run in the PostgreSQL pass.
pytestmark = [pytest.mark.asyncio, pytest.mark.postgresql_only]


@pytest.fixture
def settings(settings: Settings, pg_url: str) -> Settings:
    return first_node(settings, pg_url)


def _secrets(settings: Settings) -> dict[str, bytes]:
    return {
        p.relative_to(settings.var_dir).as_posix(): p.read_bytes()
        for p in shared_secret_paths(settings)
    }


async def test_two_nodes_starting_at_once_on_a_fresh_database_share_one_set_of_secrets(
    settings: Settings, tmp_path: Path
) -> None:
    url = new_pg_database()
    nodes = [
        other_node(settings, tmp_path / name, name).with_changes(database={"url": url})
        for name in ("node-x", "node-y", "node-z")
    ]
    engines = [await open_database(node) for node in nodes]
    try:
        await asyncio.gather(*(share_secrets(n, e) for n, e in zip(nodes, engines, strict=True)))
        made = [_secrets(node) for node in nodes]
        assert made[0] == made[1] == made[2]
        assert {"secrets/receipts-key", "secrets/dovecot-master"} <= set(made[0])
        async with engines[0].connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(shared_files))).scalar()
        assert count == len(made[0])
        # Secret files stay private on every node.
        for node in nodes:
            for path in shared_secret_paths(node):
                assert path.stat().st_mode & 0o077 == 0, path
        # A node whose own key differs takes the one the others use (logged).
        (tmp_path / "node-y" / "secrets" / "receipts-key").write_text("mine\n")
        await share_secrets(nodes[1], engines[1])
        assert _secrets(nodes[1]) == made[0]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_second_node_signs_and_reads_what_the_first_does(
    settings: Settings, directory: Directory, tmp_path: Path
) -> None:
    a = await start_service(settings)
    b = await start_service(other_node(settings, tmp_path / "b", "node-b"))
    try:
        assert _secrets(b.settings) == _secrets(a.settings)
        # A link signed by one node is good on the other.
        token = a.parts.distributions().signer.verp_token(4242)
        other: TokenSigner = b.parts.distributions().signer
        assert other.verify_verp(token) == 4242
        assert TokenSigner(b"another key of the right length, 32+").verify_verp(token) is None
    finally:
        await b.stop()
        await a.stop()


async def test_a_document_attached_on_one_node_is_fetched_by_another(
    settings: Settings, directory: Directory, parts: Parts, tmp_path: Path
) -> None:
    _, doc = await session_with_pdf(parts, tmp_path)
    elsewhere = tmp_path / "b"
    shared = SharedFiles(parts.engine, elsewhere)
    target = document_path(elsewhere, doc.sha256)
    assert not target.exists()
    assert await shared.fetch([target]) == []
    assert target.read_bytes() == document_path(settings.var_dir, doc.sha256).read_bytes()
    # Something never shared stays missing, and says so.
    absent = document_path(elsewhere, "0" * 64)
    assert await shared.fetch([absent]) == [absent]


async def test_a_body_spooled_by_one_node_is_delivered_by_another(
    settings: Settings,
    directory: Directory,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    person = await add_councillor("Anna", "Nowak")
    # node-a accepts (250) a large message into its spool, and delivers nothing.
    a = await start_service(settings.with_changes(smtp={"spool_threshold": 4096}))
    await a.workers.stop()
    text = "".join(f"Wiersz {i:05d} uchwały w sprawie żłobków.\n" for i in range(3000))
    refused = await smtp_send(
        a.smtp_port, [person.address], make_message(person.address, "Duży", text)
    )
    assert refused == {}
    assert list((settings.var_dir / "spool").iterdir()), "the body was not spooled"
    await a.stop()
    # node-b, its own var_dir without the spool file, delivers it whole.
    b = await start_service(other_node(settings, tmp_path / "b", "node-b"))
    try:
        inbox = await wait_for_inbox(settings, person.address, person.password, count=1)
        assert len(inbox) == 1
        assert b"Wiersz 02999" in inbox[0].replace(b"=\r\n", b"")
    finally:
        await b.stop()


async def test_on_sqlite_nothing_is_shared(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'mailsvc.db'}")
    try:
        await create_schema(engine)
        secret = tmp_path / "secrets" / "receipts-key"
        secret.parent.mkdir()
        secret.write_text("key\n")
        shared = SharedFiles(engine, tmp_path)
        assert not shared.enabled
        assert await shared.publish([secret]) == 0
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(shared_files))).scalar()
        assert count == 0
    finally:
        await engine.dispose()


async def test_a_large_file_is_shared_in_chunks_and_comes_back_whole(
    pg_url: str, tmp_path: Path
) -> None:
    engine = create_engine(pg_url)
    try:
        await create_schema(engine)
        one = SharedFiles(engine, tmp_path / "one", "node-1")
        two = SharedFiles(engine, tmp_path / "two", "node-2")
        body = bytes(range(256)) * (CHUNK // 256) * 3 + b"the tail\r\n"  # 3 chunks and a bit
        exact = b"x" * CHUNK  # exactly one chunk: no empty second row
        for name, content in (("spool/big.msg", body), ("spool/exact.msg", exact)):
            (tmp_path / "one" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "one" / name).write_bytes(content)
        await one.publish(
            [tmp_path / "one" / "spool/big.msg", tmp_path / "one" / "spool/exact.msg"]
        )
        async with engine.connect() as conn:
            rows = dict(
                (await conn.execute(select(shared_files.c.name, shared_files.c.size))).all()
            )
        assert rows == {
            "spool/big.msg": CHUNK,
            chunk_name("spool/big.msg", 1): CHUNK,
            chunk_name("spool/big.msg", 2): CHUNK,
            chunk_name("spool/big.msg", 3): len(b"the tail\r\n"),
            "spool/exact.msg": CHUNK,
        }
        missing = await two.fetch(
            [tmp_path / "two" / "spool/big.msg", tmp_path / "two" / "spool/exact.msg"]
        )
        assert missing == []
        assert (tmp_path / "two" / "spool/big.msg").read_bytes() == body
        assert (tmp_path / "two" / "spool/exact.msg").read_bytes() == exact
        assert (tmp_path / "two" / "spool/big.msg").stat().st_mode & 0o077 == 0
        # Forgetting a file forgets all its chunks, and only its own.
        assert await one.forget(["spool/big.msg"]) == 4
        async with engine.connect() as conn:
            left = (await conn.execute(select(shared_files.c.name))).scalars().all()
        assert left == ["spool/exact.msg"]
    finally:
        await engine.dispose()
