"""stack.database = "postgresql": `mailsvc stack up` runs a private PostgreSQL cluster from
var_dir, the service uses it through the default database.url, and it keeps its data."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat
from collections.abc import Callable

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from mailsvc.app import open_parts, start_service
from mailsvc.config import Settings
from mailsvc.directory.councillors import Councillors
from mailsvc.stack import LocalStack, StackError, free_ports
from mailsvc.stack.supervise import port_in_use
from mailsvc.storage import schema
from mailsvc.storage.db import create_engine
from mailsvc.storage.register import os_audit_context
from mailsvc.storage.tables import messages

from .conftest import make_message, smtp_send, wait_for_deliveries, wait_for_inbox

pytestmark = pytest.mark.no_database  # runs its own cluster, whatever the suite's database


def _postgres_settings(make: Callable[[], Settings]) -> Settings:
    (pg_port,) = free_ports(1)
    return make().with_changes(
        stack={"database": "postgresql", "pg_port": pg_port},
        # The default: the stack's own cluster (the suite's PostgreSQL pass sets one).
        database={"url": ""},
        smtp={"port": 0, "directory_cache_seconds": 0.0, "authentication_checks": False},
        submission={"port": 0},
        web={"port": 0},
        relay={"acknowledge": False},
        delivery={"retry_initial": 0.3, "retry_max_interval": 1.0},
        distribution={"sync_interval": 0.5, "imap_check_interval": 0.0, "reminders": ""},
    )


async def _stored_messages(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(func.count()).select_from(messages))
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def test_stack_runs_postgresql_for_the_service_and_keeps_its_data(
    new_stack_settings: Callable[[], Settings],
) -> None:
    settings = _postgres_settings(new_stack_settings)
    stack = LocalStack(settings)
    await asyncio.to_thread(stack.up)

    status = {s.name: s for s in stack.status()}
    assert status["postgres"].running
    assert status["postgres"].port_info == f"postgresql 127.0.0.1:{settings.stack.pg_port}"
    data = settings.var_dir / "postgres" / "data"
    info = data.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster belongs to postgres
        assert info.st_uid == pwd.getpwnam("postgres").pw_uid
        assert stat.S_IMODE((settings.var_dir / "postgres").stat().st_mode) == 0o700
    secret = settings.var_dir / "secrets" / "postgres-mailsvc"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    url = make_url(settings.database_url)
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.database) == ("mailsvc", "mailsvc")
    assert (url.host, url.port) == ("127.0.0.1", settings.stack.pg_port)
    assert url.password == secret.read_text().strip()

    # Empty until the first start makes the schema (open_parts, as the clerk commands do).
    engine = create_engine(settings.database_url)
    try:
        assert (await schema.state(engine)).status is schema.Status.EMPTY
    finally:
        await engine.dispose()
    async with open_parts(settings) as parts:
        account = await Councillors(settings, parts.directory, parts.register).add(
            "Ewa", "Baza", os_audit_context("pytest")
        )
    service = await start_service(settings)
    try:
        msg = make_message(account.address, "Pytanie o PostgreSQL")
        assert await smtp_send(service.smtp_port, [account.address], msg) == {}
        inbox = await wait_for_inbox(settings, account.address, account.password)
        assert len(inbox) == 1 and b"Pytanie o PostgreSQL" in inbox[0]
        rows = await wait_for_deliveries(service.queue, {"delivered"})
        assert [r.status for r in rows] == ["delivered"]
    finally:
        await service.stop()
    stored = await _stored_messages(settings)
    assert stored >= 1

    assert "postgres" in await asyncio.to_thread(stack.down)
    assert not port_in_use("127.0.0.1", settings.stack.pg_port)
    assert not {s.name: s for s in stack.status()}["postgres"].running

    # A second start finds the same cluster (no new initdb) with the message still there.
    made = (settings.var_dir / "postgres" / "initialized").stat().st_mtime_ns
    await asyncio.to_thread(stack.up)
    assert (settings.var_dir / "postgres" / "initialized").stat().st_mtime_ns == made
    assert await _stored_messages(settings) == stored


def test_stack_refuses_a_pg_port_in_use(new_stack_settings: Callable[[], Settings]) -> None:
    settings = _postgres_settings(new_stack_settings)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", settings.stack.pg_port))
        busy.listen()
        with pytest.raises(StackError, match=r"stack\.pg_port"):
            LocalStack(settings).start_service("postgres")


async def test_pg_url_is_an_empty_database_on_the_tests_own_cluster(pg_url: str) -> None:
    url = make_url(pg_url)
    assert url.drivername == "postgresql+asyncpg" and url.host == "127.0.0.1"
    assert url.port != 55432  # not the developer's server: this process's own cluster
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            )
            assert tables.scalar_one() == 0
            fsync = (await conn.execute(text("SHOW fsync"))).scalar_one()
            assert fsync == "off"
    finally:
        await engine.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="as an ordinary user the cluster runs as that user")
def test_a_var_dir_the_user_postgres_cannot_reach_is_refused(
    new_stack_settings: Callable[[], Settings],
) -> None:
    settings = _postgres_settings(new_stack_settings)
    closed = settings.var_dir / "closed"  # 0700, root's: postgres cannot pass through it
    closed.mkdir(mode=0o700)
    inner = settings.with_changes(var_dir=closed / "var")
    with pytest.raises(StackError, match=r"user 'postgres' \(it refuses root\).*cannot enter"):
        LocalStack(inner).start_service("postgres")
    assert not (closed / "var" / "postgres" / "data").exists()
