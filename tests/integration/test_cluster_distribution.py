"""A distribution is sent once per councillor however many nodes see it due: two services on one
PostgreSQL database, the real slapd and Dovecot; the leader losing its lead mid-send is resumed
by the other without duplicates; two senders of one distribution at once share the recipients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mailsvc.app import Parts, open_parts, start_service
from mailsvc.config import Settings
from mailsvc.distribution import send as send_module
from mailsvc.domain.receipt_states import EventKind
from mailsvc.stack import free_ports
from mailsvc.storage.leader import scheduler_leader
from mailsvc.storage.queue import ORIGIN_DISTRIBUTION
from mailsvc.storage.tables import (
    deliveries,
    distribution_recipients,
    distributions,
    messages,
    receipt_events,
)
from provisioning.directory import Directory
from tests.integration.cluster_nodes import RETRY, first_node, other_node, wait_until
from tests.integration.test_crash_recovery import Server, child_pids
from tests.integration.test_distribution_flow import (
    councillors,
    local_now,
    session_with_pdf,
    subject_count,
    wait_for_count,
)

# Several nodes on one PostgreSQL whatever the suite's database: run in the PostgreSQL pass.
pytestmark = [pytest.mark.asyncio, pytest.mark.postgresql_only]


@pytest.fixture
def settings(settings: Settings, pg_url: str) -> Settings:
    return first_node(settings, pg_url)


async def exactly_once(
    settings: Settings, parts: Parts, dist_id: int, people: list[Any], copies: Sequence[str] = ()
) -> None:
    """One recipient row, one "queued" event, one queued message per councillor (and copy);
    one message in each councillor's mailbox."""
    addresses = [p.address for p in people] + list(copies)
    async with parts.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(distribution_recipients.c.address).where(
                    distribution_recipients.c.distribution_id == dist_id
                )
            )
        ).scalars()
        assert Counter(rows) == Counter(addresses)
        queued = (
            await conn.execute(
                select(distribution_recipients.c.address, func.count())
                .join(receipt_events, receipt_events.c.recipient_id == distribution_recipients.c.id)
                .where(
                    distribution_recipients.c.distribution_id == dist_id,
                    receipt_events.c.kind == EventKind.QUEUED.value,
                )
                .group_by(distribution_recipients.c.address)
            )
        ).all()
        assert dict(queued) == dict.fromkeys(addresses, 1)  # type: ignore[arg-type]
        # One queued message, one delivery per address: nothing was queued twice.
        sent = (
            await conn.execute(
                select(deliveries.c.recipient, func.count())
                .join(messages, messages.c.id == deliveries.c.message_id)
                .where(messages.c.origin == ORIGIN_DISTRIBUTION)
                .group_by(deliveries.c.recipient)
            )
        ).all()
        assert dict(sent) == dict.fromkeys(addresses, 1)  # type: ignore[arg-type]
    for person in people:
        inbox = await wait_for_count(settings, person, 1)
        assert subject_count(inbox, "XV/2026") == 1, person.address


async def test_a_due_distribution_reaches_every_councillor_once_with_two_nodes(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    people = await councillors(add_councillor)
    session, _ = await session_with_pdf(parts, tmp_path)
    a = await start_service(settings)
    b = await start_service(other_node(settings, tmp_path / "b", "node-b"))
    try:
        dist = await parts.distributions().schedule(
            session.number, at=local_now() + timedelta(seconds=3), actor="pytest"
        )
        store = parts.distributions().store
        assert await wait_until(lambda: _status_is(store, dist.id, "sent"), within=20)
        assert await wait_until(
            lambda: _all_have(store, dist.id, EventKind.DELIVERED, len(people)), within=20
        )
        await exactly_once(settings, parts, dist.id, people)
    finally:
        await b.stop()
        await a.stop()


async def test_a_leader_that_loses_its_lead_mid_send_is_resumed_by_the_other_without_duplicates(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(send_module, "SEND_CHUNK", 1)  # one recipient per transaction
    people = await councillors(add_councillor)
    session, _ = await session_with_pdf(parts, tmp_path)
    # node-a checks its connection every 2 s; node-b tries for the lead every 0.2 s: when
    # node-a's connection is cut, node-b leads before node-a even knows it lost the lead.
    a = await start_service(settings.with_changes(cluster={"leader_retry_seconds": 2.0}))
    b = await start_service(
        other_node(settings, tmp_path / "b", "node-b").with_changes(
            cluster={"leader_retry_seconds": 0.2}
        )
    )
    try:
        assert a.leadership.role == "leader" and b.leadership.role == "follower"
        # node-a stalls after its first recipient (its job is then cancelled mid-send).
        sender = a.parts.distributions().sender
        original = sender._queue_chunk
        first_done = asyncio.Event()

        async def stalling(*args: Any) -> int:
            queued = await original(*args)
            first_done.set()
            await asyncio.sleep(60)
            return queued

        sender._queue_chunk = stalling  # type: ignore[method-assign]
        dist = await parts.distributions().schedule(
            session.number, at=local_now() + timedelta(seconds=1), actor="pytest"
        )
        await asyncio.wait_for(first_done.wait(), 20)
        await a.leadership.lose_connection()  # type: ignore[attr-defined]
        assert await b.leadership.wait_for("leader", within=5.0)
        assert await a.leadership.wait_for("follower", within=5.0)

        store = parts.distributions().store
        assert await wait_until(lambda: _status_is(store, dist.id, "sent"), within=20)
        assert await wait_until(
            lambda: _all_have(store, dist.id, EventKind.DELIVERED, len(people)), within=20
        )
        await exactly_once(settings, parts, dist.id, people)
        assert a.leadership.role == "follower"  # it never led again meanwhile
    finally:
        await b.stop()
        await a.stop()


async def test_a_leader_killed_with_sigkill_around_the_due_time_loses_no_councillor(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    """node-a is `mailsvc serve` in its own process, killed with SIGKILL as soon as it has
    queued part of a distribution (or, if it is quicker than the test, right after): node-b
    takes the lead and the distribution reaches every councillor and copy exactly once (one
    recipient row, one "queued" event, one queued message each)."""
    copies = [f"kopia{n:03d}@example.org" for n in range(150)]  # several chunks to send
    settings = settings.with_changes(distribution={"copies": ",".join(copies)})
    people = await councillors(add_councillor)
    session, _ = await session_with_pdf(parts, tmp_path)
    (smtp_port,) = free_ports(1)
    a = Server(settings, smtp_port)
    a.env.update(
        MAILSVC_CLUSTER__NODE_ID="node-a",
        MAILSVC_CLUSTER__LEADER_RETRY_SECONDS=str(RETRY),
        MAILSVC_DISTRIBUTION__SYNC_INTERVAL="0.5",
        MAILSVC_DISTRIBUTION__IMAP_CHECK_INTERVAL="0",
        MAILSVC_DISTRIBUTION__REMINDERS="",
        MAILSVC_DISTRIBUTION__COPIES=",".join(copies),
        MAILSVC_WEB__PORT="0",
    )
    a.start()
    b = None
    frozen: list[int] = []
    try:
        await a.ready()
        # node-a's delivery process is frozen before anything is queued: it holds no delivery
        # when killed (taking over a killed node's deliveries is the leases' business, tested
        # apart); what is tested here is the scheduler's.
        frozen = child_pids(a.proc.pid)  # type: ignore[union-attr]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        assert await wait_until(lambda: _leader_is(parts, "node-a"), within=10)
        b = await start_service(other_node(settings, tmp_path / "b", "node-b"))
        assert b.leadership.role == "follower"
        dist = await parts.distributions().schedule(
            session.number, at=local_now() + timedelta(seconds=2), actor="pytest"
        )
        total = len(people) + len(copies)
        assert await wait_until(
            lambda: _recipient_count(parts, dist.id), within=20, interval=0.005
        ), "node-a queued nothing"
        for pid in [a.proc.pid, *frozen]:  # type: ignore[union-attr]
            os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(a.proc.wait, 10)  # type: ignore[union-attr]
        partial = await _recipient_count(parts, dist.id)
        assert await b.leadership.wait_for("leader", within=5.0), "node-b did not take the lead"
        store = parts.distributions().store
        assert await wait_until(lambda: _status_is(store, dist.id, "sent"), within=30)
        assert await _recipient_count(parts, dist.id) == total
        await exactly_once(settings, parts, dist.id, people, copies)
        logging.getLogger(__name__).info("node-a had queued %d of %d when killed", partial, total)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        a.stop()
        if b is not None:
            await b.stop()


async def _leader_is(parts: Parts, node: str) -> bool:
    return await scheduler_leader(parts.engine) == node


async def _recipient_count(parts: Parts, dist_id: int) -> int:
    async with parts.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count())
                    .select_from(distribution_recipients)
                    .where(distribution_recipients.c.distribution_id == dist_id)
                )
            ).scalar_one()
        )


async def test_two_senders_of_one_distribution_at_once_share_the_recipients(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leader cut off from the others but still sending, and its successor: both send the
    same distribution at the same moment; the claims keep each councillor to one message."""
    monkeypatch.setattr(send_module, "SEND_CHUNK", 1)
    people = await councillors(add_councillor)
    session, _ = await session_with_pdf(parts, tmp_path)
    dist = await parts.distributions().schedule(
        session.number, at=local_now() + timedelta(hours=1), actor="pytest"
    )
    # As a leader that died mid-send leaves it: every sender resumes it.
    async with parts.engine.begin() as conn:
        await conn.execute(
            update(distributions).where(distributions.c.id == dist.id).values(status="sending")
        )
    async with open_parts(other_node(settings, tmp_path / "b", "node-b")) as other:
        results = await asyncio.gather(
            *(p.distributions().send(dist.id) for p in (parts, other, parts, other))
        )
    assert sum(r.queued for r in results) == len(people)
    service = await start_service(settings, scheduler=False)  # delivers what was queued
    try:
        await exactly_once(settings, parts, dist.id, people)
    finally:
        await service.stop()


async def _status_is(store: Any, dist_id: int, status: str) -> bool:
    row = await store.distribution(dist_id)
    return row is not None and row.status == status


async def _all_have(store: Any, dist_id: int, kind: EventKind, count: int) -> bool:
    return len(await store.recipients_with_kind(dist_id, kind)) >= count
