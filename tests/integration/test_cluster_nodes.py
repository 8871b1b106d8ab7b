"""Three real `mailsvc serve` nodes on one PostgreSQL database, one slapd and one Dovecot.

Residents' mail sent to all three while one node is killed with SIGKILL twice loses nothing
that got 250 (duplicates are counted, printed and matched against the takeovers the nodes
report); a distribution due while the scheduler's leader is killed reaches every councillor
exactly once; `mailsvc cluster status --json` shows the nodes as they are.
"""

from __future__ import annotations

import asyncio
import email
import re
import smtplib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fpdf import FPDF

from mailsvc import secret_store
from mailsvc.app import open_parts
from mailsvc.config import Settings
from mailsvc.directory.councillors import Councillors, CreatedAccount
from mailsvc.mailbox import read_inbox
from mailsvc.storage.register import os_audit_context
from provisioning.directory import Directory

from .cluster_nodes import LOOPBACK, ClusterNodes, LmtpDelay, state_of, status_leaders

# Several nodes on one PostgreSQL whatever the suite's database: run in the PostgreSQL pass.
pytestmark = pytest.mark.postgresql_only

PEOPLE = (("Łukasz", "Żółć"), ("Anna", "Nowak"), ("Piotr", "Kowalski"), ("Ewa", "Dąbrowska"))
# A takeover is reported in the log of the node that takes the delivery over: a line naming
# the old node and saying that a duplicate is possible (docs/operations.md).
TAKEOVER_LINE = re.compile(r"take ?over|taken over|took over", re.IGNORECASE)
# The relay's 250 after the dot names the message's queue id, which its log lines name too.
QUEUED = re.compile(r"queued as (\w+)")
QUEUE_ID = re.compile(r"queue (\w+)")


@pytest.fixture
def clerk_settings(stack_settings: Settings, pg_url: str, tmp_path: Path) -> Settings:
    """What the clerks' commands run with: the cluster's database, a var_dir of their own
    (the directory's passwords given, as to a node)."""
    return stack_settings.with_changes(
        var_dir=tmp_path / "clerk",
        database={"url": pg_url},
        directory={
            "admin_password": secret_store.admin_password(stack_settings),
            "reader_password": secret_store.reader_password(stack_settings),
        },
        provisioning={"send_welcome": False},
    )


@pytest.fixture
async def councillors(
    clerk_settings: Settings, directory: Directory
) -> AsyncIterator[list[CreatedAccount]]:
    """A few councillors in the real directory (no welcome message: the counts stay exact)."""
    made = []
    async with open_parts(clerk_settings) as parts:
        service = Councillors(clerk_settings, parts.directory, parts.register)
        for given, surname in PEOPLE:
            made.append(await service.add(given, surname, os_audit_context("pytest")))
    yield made


@pytest.fixture
async def make_cluster(
    stack_settings: Settings, local_stack: Any, pg_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[ClusterNodes]]]:
    """Start three nodes (keyword arguments go to ClusterNodes); all stopped afterwards, and
    their logs attached to a failure's report."""
    made: list[ClusterNodes] = []

    async def make(**kwargs: Any) -> ClusterNodes:
        cluster = ClusterNodes(stack_settings, pg_url, tmp_path / "nodes", **kwargs)
        made.append(cluster)
        await cluster.start()
        return cluster

    yield make
    for cluster in made:
        await cluster.stop()
        print(cluster.all_logs()[-20000:])


# -- residents' mail -----------------------------------------------------------------------


def send_one(port: int, rcpt: str, subject: str) -> str:
    """One message over a new connection: "250 <queue id>", "refused" (a reply other than 250),
    "unreachable" (no session), or "broken" (the session broke off after DATA began: the sender
    cannot know whether the node kept the message, and sends it again elsewhere)."""
    msg = EmailMessage()
    msg["From"] = "Jan Mieszkaniec <jan@example.org>"
    msg["To"] = rcpt
    msg["Subject"] = subject
    msg.set_content(f"Dzień dobry, {subject}.\n")
    try:
        client = smtplib.SMTP(LOOPBACK, port, timeout=30)
    except OSError:
        return "unreachable"
    try:
        client.ehlo("resident.example.org")
        if client.mail("jan@example.org")[0] != 250 or client.rcpt(rcpt)[0] != 250:
            return "refused"
    except (OSError, smtplib.SMTPException):
        return "unreachable"
    try:
        code, reply = client.data(msg.as_bytes())
    except smtplib.SMTPResponseException:
        return "refused"
    except (OSError, smtplib.SMTPException):
        return "broken"
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    if code != 250:
        return "refused"
    queued = QUEUED.search(reply.decode(errors="replace"))
    return f"250 {queued.group(1) if queued else '?'}"


async def subjects_in(stack: Settings, person: CreatedAccount) -> list[str]:
    found = await read_inbox(
        stack.stack.host, stack.stack.imap_port, person.address, person.password, headers_only=True
    )
    return [str(email.message_from_bytes(raw, policy=policy.default)["Subject"]) for raw in found]


def takeovers_logged(cluster: ClusterNodes) -> list[str]:
    """The queue ids of the takeovers the nodes' logs report (one per delivery taken over)."""
    found = []
    for line in cluster.all_logs().splitlines():
        if TAKEOVER_LINE.search(line) and not line.startswith("===="):
            queue = QUEUE_ID.search(line)
            found.append(queue.group(1) if queue else "?")
    return found


async def test_mail_to_three_nodes_loses_nothing_when_one_is_killed_twice(
    stack_settings: Settings,
    councillors: list[CreatedAccount],
    make_cluster: Callable[..., Awaitable[ClusterNodes]],
) -> None:
    # Dovecot's replies held 0.15 s each: a delivery takes about a second, so kills find
    # deliveries in flight, some stored by Dovecot and not yet recorded.
    proxy = LmtpDelay(stack_settings.lmtp_address, 0.15)
    await proxy.start()
    try:
        cluster = await make_cluster(lmtp=(LOOPBACK, proxy.port))
        victim = cluster.nodes[2]
        total = 150
        accepted: dict[str, CreatedAccount] = {}
        queue_ids: dict[str, str] = {}  # subject -> the queue id in the 250 reply
        broken: set[str] = set()
        gate = asyncio.Semaphore(6)
        # The victim is killed once 30 messages got 250, and again once 30 more did after it
        # was back.
        progress = asyncio.Condition()

        async def send(i: int) -> None:
            # Paced, so that the sending outlasts two kills and restarts (about 45 s).
            await asyncio.sleep(i * 0.3)
            subject = f"cluster-{i:03d}"
            rcpt = councillors[i % len(councillors)]
            for attempt in range(30):
                node = cluster.nodes[(i + attempt) % len(cluster.nodes)]
                async with gate:
                    result = await asyncio.to_thread(
                        send_one, node.smtp_port, rcpt.address, subject
                    )
                if result.startswith("250"):
                    accepted[subject] = rcpt
                    queue_ids[subject] = result.split()[1]
                    async with progress:
                        progress.notify_all()
                    return
                if result == "broken":
                    broken.add(subject)
                await asyncio.sleep(0.2)

        inflight_at_kill: list[int] = []

        async def kill_twice() -> None:
            # Down longer than a lease the first time (the others take its deliveries over),
            # briefly the second (it may be back first and take its own claims back).
            for down_for in (cluster.lease_seconds + 1.0, 0.5):
                threshold = min(len(accepted) + 30, total - 10)
                async with progress:
                    await progress.wait_for(lambda: len(accepted) >= threshold)  # noqa: B023
                # Killed while it holds deliveries (looked at for at most 10 s).
                for _ in range(200):
                    held = await cluster.inflight(victim)
                    if held:
                        break
                    await asyncio.sleep(0.05)
                victim.kill()
                inflight_at_kill.append(held)
                await asyncio.sleep(down_for)
                await victim.start()

        killer = asyncio.create_task(kill_twice())
        await asyncio.gather(*(send(i) for i in range(total)))
        await asyncio.wait_for(killer, 120)

        # Everything that got 250 arrives (after the leases of the killed node's claims).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while True:
            seen: Counter[str] = Counter()
            for person in councillors:
                seen.update(await subjects_in(stack_settings, person))
            missing = sorted(s for s in accepted if seen[s] == 0)
            if not missing or loop.time() > deadline:
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(2 * cluster.lease_seconds)  # late copies, if any, arrive too
        seen = Counter()
        misplaced = 0
        for person in councillors:
            subjects = await subjects_in(stack_settings, person)
            seen.update(subjects)
            misplaced += sum(1 for s in subjects if s in accepted and accepted[s] is not person)
        missing = sorted(s for s in accepted if seen[s] == 0)
        duplicates = {s: n for s, n in seen.items() if n > 1}
        extra_copies = sum(n - 1 for n in duplicates.values())
        metrics = {}
        for node in cluster.nodes:
            for name, value in (await cluster.metrics(node)).items():
                if "takeover" in name or "late_outcome" in name:
                    metrics[f"{node.name}:{name}"] = value
        logged = takeovers_logged(cluster)
        print(
            f"\ncluster mail: {total} sent, {len(accepted)} got 250, {len(broken)} sessions broke "
            f"off after DATA (sent again), {len(missing)} lost, {len(duplicates)} duplicated "
            f"({extra_copies} extra copies: {duplicates}), in flight on {victim.name} at the "
            f"kills: {inflight_at_kill}, takeovers in the logs: {len(logged)}, metrics: {metrics}"
        )
        assert victim.kills == 2
        assert len(accepted) == total, "a message never got 250 from any node"
        assert not missing, f"lost after 250: {missing}"
        assert misplaced == 0
        assert sum(inflight_at_kill) > 0, "the kills found no delivery in flight: nothing tested"
        # Every extra copy comes from a takeover the nodes reported (its log line names the
        # message's queue id), or from a sender that sent again after its session broke off.
        reported = Counter(logged)
        for subject, copies in duplicates.items():
            explained = reported[queue_ids[subject]] + (subject in broken)
            assert copies - 1 <= explained, (
                f"{subject} (queue {queue_ids[subject]}): {copies} copies, "
                f"{reported[queue_ids[subject]]} takeovers of it reported"
            )
        # The running nodes' metrics count the takeovers their logs report (a killed node's
        # count dies with it: the logs may report more).
        counted = sum(v for k, v in metrics.items() if k.endswith("takeovers_total"))
        assert 0 < counted <= len(logged), (counted, logged)
    finally:
        await proxy.stop()


# -- a distribution while the scheduler's leader dies ---------------------------------------


def local_now() -> datetime:
    """Now in the council's time zone (what clerks type), naive."""
    return datetime.now(ZoneInfo("Europe/Warsaw")).replace(tzinfo=None)


def make_pdf(path: Path) -> Path:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.cell(text="Projekt uchwaly")
    pdf.output(str(path))
    return path


async def test_distribution_due_when_the_leader_is_killed_reaches_everyone_once(
    stack_settings: Settings,
    clerk_settings: Settings,
    councillors: list[CreatedAccount],
    make_cluster: Callable[..., Awaitable[ClusterNodes]],
    tmp_path: Path,
) -> None:
    cluster = await make_cluster()
    leader = await cluster.leader()
    async with open_parts(clerk_settings) as parts:
        service = parts.distributions()
        starts = (local_now() + timedelta(days=14)).replace(hour=10, minute=0, second=0)
        session = await service.create_session(
            number="XXI/2026",
            kind="ordinary",
            starts_at=starts,
            place="Sala Obrad, ul. Rynek 1",
            agenda=["Otwarcie sesji", "Projekt uchwały"],
            actor="pytest",
        )
        await service.attach(
            session.number, make_pdf(tmp_path / "projekt.pdf"), doc_kind="draft-resolution",
            agenda_item=2, actor="pytest",
        )  # fmt: skip
        lead_time = 6.0
        dist = await service.schedule(
            session.number, at=local_now() + timedelta(seconds=lead_time), actor="pytest"
        )
        await asyncio.sleep(lead_time - 1.0)
        leader.kill()  # one second before it is due
        # Another node leads and sends it; every councillor gets it once.
        new_leader = await cluster.leader(within=30, other_than=leader)
        assert new_leader is not leader
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            counts = {
                p.address: sum("XXI/2026" in s for s in await subjects_in(stack_settings, p))
                for p in councillors
            }
            if all(counts.values()) or loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
        # The old leader comes back (a follower now, or leader again): it sends nothing twice.
        await leader.start()
        await asyncio.sleep(3 * cluster.lease_seconds)
        counts = {
            p.address: sum("XXI/2026" in s for s in await subjects_in(stack_settings, p))
            for p in councillors
        }
        print(f"\ndistribution: leader {leader.name} killed, {new_leader.name} took over: {counts}")
        assert counts == {p.address: 1 for p in councillors}
        recipients = await service.store.recipients(dist.id)
        assert sorted(r.address for r in recipients) == sorted(p.address for p in councillors)
        row = await service.store.distribution(dist.id)
        assert row is not None and row.status == "sent"


# -- cluster status ---------------------------------------------------------------------------


async def test_cluster_status_shows_three_nodes_one_leader_and_a_killed_node_down(
    make_cluster: Callable[..., Awaitable[ClusterNodes]],
) -> None:
    cluster = await make_cluster()
    names = sorted(n.name for n in cluster.nodes)
    status = await cluster.wait_status(
        lambda d: all(state_of(d, n) == "up" for n in names) and len(status_leaders(d)) == 1
    )
    assert sorted(r["node_id"] for r in status["nodes"]) == names
    assert all(state_of(status, n) == "up" for n in names), status
    assert len(status_leaders(status)) == 1, status
    assert status["heartbeat_seconds"] == cluster.heartbeat_seconds
    assert status["down_after_seconds"] == 3 * cluster.heartbeat_seconds
    for row in status["nodes"]:
        assert row["pid"] == cluster.node(row["node_id"]).pid
        assert row["heartbeat_age_seconds"] < status["down_after_seconds"]
        assert row["stopped_at"] is None
        assert row["inflight"] == 0 and row["expired_leases"] == 0

    # The leader killed: shown down once its heartbeat is 3 × heartbeat_seconds old, and
    # another node leads; a node stopped cleanly is shown stopped.
    leader = cluster.node(status_leaders(status)[0])
    leader.kill()
    down = await cluster.wait_status(
        lambda d: state_of(d, leader.name) == "down" and len(status_leaders(d)) == 1,
        within=3 * cluster.heartbeat_seconds + 20,
    )
    assert state_of(down, leader.name) == "down", down
    row = next(r for r in down["nodes"] if r["node_id"] == leader.name)
    assert row["heartbeat_age_seconds"] >= down["down_after_seconds"]
    assert status_leaders(down) != [leader.name] and len(status_leaders(down)) == 1, down
    follower = next(n for n in cluster.nodes if n.running and n.name not in status_leaders(down))
    await follower.stop()
    stopped = await cluster.wait_status(lambda d: state_of(d, follower.name) == "stopped")
    assert state_of(stopped, follower.name) == "stopped", stopped
    assert state_of(stopped, leader.name) == "down", stopped
    text = await cluster.cli("cluster", "status")
    assert text.returncode == 0, text.stderr
    for name in names:
        assert name in text.stdout
