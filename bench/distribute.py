"""Distribution benchmark: one notice with a large pack of PDFs to a whole city council, on the
real stack, beside a raw LMTP replay of the same rendered messages.

One run, one private slapd + Dovecot (mailsvc.stack.LocalStack, free loopback ports, everything
under one temporary directory in /tmp):

0. setup (a child process): N synthetic councillors imported with the code of
   ``mailsvc councillors import`` (welcome messages off), one session per round (21 days
   ahead, then a week apart) with four many-page PDFs of random images (20 MB together by
   default) attached — under ``distribution.attach_max_bytes``, so they go out attached,
   base64 (~27 MB per message).

Then ``--rounds`` times (2; other work on a shared machine slows one phase more than another,
and two rounds show how much), each phase into empty mailboxes after ``os.sync()`` and a wait
for a quiet machine:

1. mailsvc (a child process, so its peak RSS and CPU are its own): schedule the round's
   notice, then ``Distributions.send`` with the delivery workers running (``delivery.workers``
   LMTP connections, 4 by default) until every recipient's delivery is recorded
   → wall time from the start of send to the last delivery recorded, deliveries/s, peak RSS
   (goal ≤ 2 × pack + 150 MB);
2. the mailboxes are checked (one message each, every recipient exactly one DELIVERED receipt
   event, one sampled message's PDFs decode to the right SHA-256) and wiped;
3. peer (a child process): the same rendered messages — each head as mailsvc stored it in the
   queue plus the attachment part files mailsvc encoded — replayed straight into Dovecot's LMTP
   by a minimal client over as many connections → wall time (goal: mailsvc ≤ 1.1 × this, and
   at most 15 ms of mailsvc's own CPU, user + kernel, per delivered message);
   the mailboxes are checked again (the sampled message must be byte-identical to mailsvc's
   below Dovecot's trace headers) and wiped.

    .venv/bin/python bench/distribute.py            # 1,000 recipients, 20 MB: about 10 minutes
    .venv/bin/python bench/distribute.py --quick    # 100 recipients, 20 MB: about 2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import email
import hashlib
import multiprocessing
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from distribute_lmtp import Replay, replay
from distribute_nodes import NodesRun, run_nodes
from distribute_nodes import report as nodes_report
from distribute_pack import PackFile, make_pack
from provision import StackSpec, fsync_probe, machine, make_council, write_roster
from relay_nodes import parse_nodes

from mailsvc import eventloop
from mailsvc.config import Settings
from mailsvc.relay.delivery.body import parts_dir
from mailsvc.stack import LocalStack, free_ports
from mailsvc.storage.queue import MailQueue

MB = 1024 * 1024
DEFAULT_RECIPIENTS = 1000
QUICK_RECIPIENTS = 100
DEFAULT_PACK_MB = 20.0
PACK_DOCUMENTS = 4
GOAL_RSS_FACTOR = 2.0  # peak RSS ≤ 2 × pack + 150 MB
GOAL_RSS_EXTRA_MB = 150.0
GOAL_RATIO = 1.1  # mailsvc's wall time ≤ 1.1 × the raw replay's
GOAL_CPU_MS = 15  # mailsvc's own CPU per delivered message, user + kernel
SESSION_DAYS_AHEAD = 21  # clear of every notice rule (7 days, 14 for budget drafts)
# One session per round, a week apart (each gets one notice).
SESSION_NUMBERS = ("XV/2026", "XVI/2026", "XVII/2026", "XVIII/2026", "XIX/2026", "XX/2026")
DEFAULT_ROUNDS = 2
# No delivery recorded for this long: something is stuck (a dead letter, a deferral).
STALL_SECONDS = 300.0


class BenchError(Exception):
    """The benchmark could not measure what it should (not a missed goal)."""


# --- settings shared by the parent and the children -------------------------------------------


@dataclass(frozen=True)
class Bench:
    """What a child process needs to rebuild the same settings (picklable, no secrets)."""

    spec: StackSpec
    attach_max_bytes: int

    def settings(self) -> Settings:
        return self.spec.settings().with_changes(
            distribution={"attach_max_bytes": self.attach_max_bytes, "copies": ""}
        )


def database_path(settings: Settings) -> Path:
    prefix = "sqlite+aiosqlite:///"
    if not settings.database_url.startswith(prefix):
        raise BenchError(f"the benchmark needs the SQLite default, not {settings.database_url}")
    return Path(settings.database_url[len(prefix) :])


# --- children: each step in its own process -----------------------------------------------------


def own_cpu() -> float:
    user, system = own_cpu_split()
    return user + system


def own_cpu_split() -> tuple[float, float]:
    """This process's CPU seconds so far, all threads: (user, kernel)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def peak_rss() -> int:
    """Peak resident set size of this process so far, bytes: VmHWM, which starts afresh at
    exec (getrusage's ru_maxrss keeps the forking parent's peak across exec on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError("no VmHWM in /proc/self/status")


def _child_main(func: Callable[..., Any], args: tuple[Any, ...], out: Connection) -> None:
    try:
        result = func(*args)
        # The loop the service runs on (uvloop unless MAILSVC_EVENT_LOOP=asyncio).
        report: dict[str, Any] = eventloop.run(result) if asyncio.iscoroutine(result) else result
        report["max_rss_bytes"] = peak_rss()
        report["process_cpu_seconds"] = own_cpu()
        out.send(("ok", report))
    except BaseException:
        out.send(("error", traceback.format_exc()))
    finally:
        out.close()


def in_child(func: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """``func(*args)`` (awaited if it is a coroutine) in a fresh process; its report dict with
    the process's peak RSS and CPU added."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(func, args, send))
    child.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = "error", "the child process died without a report"
    child.join()
    if status != "ok":
        raise BenchError(f"{func.__name__} failed:\n{payload}")
    return dict(payload)


async def setup(bench: Bench, roster: str, pack: list[PackFile], rounds: int) -> dict[str, Any]:
    """Import the councillors, create one session per round and attach the pack to each."""
    from mailsvc.app import open_parts
    from mailsvc.cli.councillors import run_import
    from mailsvc.distribution.send import COUNCIL_GROUP

    settings = bench.settings()
    started = time.perf_counter()
    async with open_parts(settings) as parts:
        _, result, problems, _ = await run_import(parts, Path(roster), quiet=True)
        if result is None or result.errors or problems:
            raise BenchError(f"import failed: {problems[:3]} {result and result.errors[:3]}")
        imported = time.perf_counter() - started
        service = parts.distributions()
        tz = ZoneInfo(settings.distribution.timezone)
        first = datetime.now(tz).replace(tzinfo=None) + timedelta(days=SESSION_DAYS_AHEAD)
        first = first.replace(hour=10, minute=0, second=0, microsecond=0)
        agenda = [
            "Otwarcie sesji i stwierdzenie prawomocności obrad",
            *(f"Rozpatrzenie dokumentu: {f.filename}" for f in pack),
            "Zamknięcie sesji",
        ]
        sessions = []
        documents = []
        for k in range(rounds):
            session = await service.create_session(
                number=SESSION_NUMBERS[k],
                kind="ordinary",
                starts_at=first + timedelta(days=7 * k),
                place="Sala Sesyjna Ratusza, pl. Wolności 1, Łódź",
                title="Sesja budżetowa rady miasta i rad dzielnic",
                agenda=agenda,
                actor="bench",
            )
            sessions.append((session.number, session.starts_at.isoformat(sep=" ")[:16]))
            for position, f in enumerate(pack, start=2):
                doc = await service.attach(
                    session.number, f.path, doc_kind="draft-resolution", agenda_item=position,
                    actor="bench",
                )  # fmt: skip
                if doc.sha256 != f.sha256 or doc.size != f.size:
                    raise BenchError(f"{f.filename} stored as {doc.sha256} ({doc.size} bytes)")
                if k == 0:
                    documents.append((doc.filename, doc.pages))
        members = await parts.directory.expand_group(COUNCIL_GROUP)
    return {
        "created": len(result.created),
        "import_seconds": imported,
        "seconds": time.perf_counter() - started,
        "group_members": len(members or []),
        "documents": documents,
        "sessions": sessions,
    }


class DeliveryTracker:
    """Counts what the delivery workers record (a wrapper around ``MailQueue.record`` and
    ``mark_dead`` of one queue object): when the last delivery was committed, and anything
    that was not delivered."""

    def __init__(self, progress: int) -> None:
        self.progress = progress
        self.delivered = 0
        self.problems: list[str] = []
        self.last = 0.0
        self.changed = asyncio.Event()

    def attach(self, queue: MailQueue) -> None:
        record, mark_dead = queue.record, queue.mark_dead

        async def recorded(message_id: int, outcomes: Any, **kwargs: Any) -> list[str]:
            queued = await record(message_id, outcomes, **kwargs)
            self.last = time.perf_counter()
            for _, status, reply, _ in outcomes:
                if status == "delivered":
                    self.delivered += 1
                    if self.progress and self.delivered % self.progress == 0:
                        print(f"    mailsvc: {self.delivered:,} delivered", file=sys.stderr)
                else:
                    self.problems.append(f"{status}: {reply}")
            self.changed.set()
            return queued

        async def dead(message_id: int, error: str) -> None:
            await mark_dead(message_id, error)
            self.problems.append(f"dead letter: {error.strip().splitlines()[-1]}")
            self.changed.set()

        queue.record = recorded  # type: ignore[method-assign]
        queue.mark_dead = dead  # type: ignore[method-assign]

    async def wait_for(self, expected: int) -> None:
        while self.delivered < expected:
            if self.problems:
                raise BenchError(f"not every message was delivered: {self.problems[:3]}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), STALL_SECONDS)
            except TimeoutError:
                raise BenchError(
                    f"no delivery recorded for {STALL_SECONDS:.0f} s "
                    f"({self.delivered} of {expected} delivered)"
                ) from None
        if self.problems:
            raise BenchError(f"not every message was delivered: {self.problems[:3]}")


async def phase_mailsvc(
    bench: Bench, number: str, progress: int, stack: tuple[int, ...]
) -> dict[str, Any]:
    """Schedule and send the notice with the delivery workers running, until all delivered."""
    from mailsvc.app import open_parts, smarthost_target
    from mailsvc.relay.delivery.worker import DeliveryWorkers

    settings = bench.settings()
    async with open_parts(settings) as parts, smarthost_target(settings) as smarthost:
        tracker = DeliveryTracker(progress)
        tracker.attach(parts.queue)
        workers = DeliveryWorkers(parts.queue, settings, smarthost=smarthost)
        await workers.start()
        parts.on_queued = workers.wake  # before the use cases are built: they keep it
        service = parts.distributions()
        dist = await service.schedule(number, actor="bench")
        rss_before = peak_rss()
        watch = MachineWatch(stack)
        split, started = own_cpu_split(), time.perf_counter()
        try:
            result = await service.send(dist.id)
            queued = time.perf_counter()
            send_cpu = sum(own_cpu_split()) - sum(split)
            await tracker.wait_for(result.queued)
        finally:
            await workers.stop()
        user, system = (b - a for a, b in zip(split, own_cpu_split(), strict=True))
        cpu = user + system
        machine_use = watch.finish(cpu)
    return {
        "distribution_id": dist.id,
        "queued": result.queued,
        "delivered": tracker.delivered,
        "seconds": tracker.last - started,
        "send_seconds": queued - started,
        "send_cpu_seconds": send_cpu,
        "cpu_seconds": cpu,
        "cpu_system_seconds": system,
        "rss_before_send": rss_before,
        "workers": settings.delivery.workers,
        "machine": machine_use,
    }


def phase_peer(
    bench: Bench, distribution_id: int, connections: int, progress: int, stack: tuple[int, ...]
) -> dict[str, Any]:
    """Replay the heads mailsvc rendered, with their part files, straight into Dovecot."""
    from mailsvc.relay.delivery.body import PartedBody

    settings = bench.settings()
    with closing(sqlite3.connect(database_path(settings))) as db:
        rows = db.execute(
            "SELECT h.message_id, h.mail_from, h.body, h.parts, d.recipient "
            "FROM bench_heads h JOIN deliveries d ON d.message_id = h.message_id "
            "WHERE h.message_id IN (SELECT queue_message_id FROM distribution_recipients "
            "WHERE distribution_id = ?) ORDER BY h.message_id, d.id",
            (distribution_id,),
        ).fetchall()
    by_message: dict[int, tuple[str, bytes, str, list[str]]] = {}
    for message_id, mail_from, head, parts, recipient in rows:
        by_message.setdefault(message_id, (mail_from, head, parts, []))[3].append(recipient)
    messages = []
    for mail_from, head, parts, recipients in by_message.values():
        stored = PartedBody.from_stored(head, parts, settings.var_dir)
        stored.check()
        messages.append(Replay(mail_from, tuple(recipients), head, stored.files, stored.boundary))
    host, port = settings.lmtp_address
    watch = MachineWatch(stack)
    split = own_cpu_split()
    result = replay(host, port, messages, connections=connections, progress=progress)
    user, system = (b - a for a, b in zip(split, own_cpu_split(), strict=True))
    cpu = user + system
    machine_use = watch.finish(cpu)
    return {
        "messages": len(messages),
        "delivered": result.delivered,
        "refused": result.refused[:5],
        "refused_count": len(result.refused),
        "seconds": result.seconds,
        "cpu_seconds": cpu,
        "cpu_system_seconds": system,
        "bytes_sent": result.bytes_sent,
        "machine": machine_use,
    }


# --- checks in the parent ------------------------------------------------------------------------


def keep_heads(db_path: Path) -> None:
    """A trigger that copies a distribution message's head aside when the queue drops it after
    delivery: the peer replays exactly those bytes. It costs one small insert per message in
    mailsvc's delivery transaction."""
    with closing(sqlite3.connect(db_path)) as db:
        db.executescript(
            """
            CREATE TABLE bench_heads (
                message_id INTEGER PRIMARY KEY, mail_from TEXT, body BLOB, parts TEXT);
            CREATE TRIGGER bench_keep_head AFTER UPDATE OF body ON messages
            WHEN OLD.body IS NOT NULL AND NEW.body IS NULL AND OLD.origin = 'distribution'
            BEGIN
                INSERT INTO bench_heads VALUES (OLD.id, OLD.mail_from, OLD.body, OLD.parts);
            END;
            """
        )


@dataclass
class Rendered:
    """What mailsvc rendered: recipients, the heads' sizes and the shared part files."""

    recipients: list[str]
    head_bytes: int  # all heads together
    part_bytes: int  # the part files of one message together
    part_files: int


def rendered(db_path: Path, settings: Settings, distribution_id: int) -> Rendered:
    from mailsvc.relay.delivery.body import PartedBody

    with closing(sqlite3.connect(db_path)) as db:
        recipients = [
            a
            for (a,) in db.execute(
                "SELECT address FROM distribution_recipients WHERE distribution_id = ? "
                "ORDER BY address",
                (distribution_id,),
            )
        ]
        mine = (
            "FROM bench_heads WHERE message_id IN (SELECT queue_message_id "
            "FROM distribution_recipients WHERE distribution_id = ?)"
        )
        head_bytes, count = db.execute(
            "SELECT coalesce(sum(length(body)), 0), count(*) " + mine, (distribution_id,)
        ).fetchone()
        first = db.execute("SELECT body, parts " + mine + " LIMIT 1", (distribution_id,)).fetchone()
    if count != len(recipients) or first is None:
        raise BenchError(f"{count} heads kept for {len(recipients)} recipients")
    stored = PartedBody.from_stored(first[0], first[1], settings.var_dir)
    part_bytes = stored.size - len(first[0])
    return Rendered(recipients, head_bytes, part_bytes, len(stored.files))


def check_receipts(db_path: Path, distribution_id: int, expected: int) -> None:
    """Every recipient has exactly one DELIVERED receipt event."""
    from mailsvc.domain.receipt_states import EventKind

    with closing(sqlite3.connect(db_path)) as db:
        counts = db.execute(
            "SELECT r.address, (SELECT count(*) FROM receipt_events e "
            "WHERE e.recipient_id = r.id AND e.kind = ?) FROM distribution_recipients r "
            "WHERE r.distribution_id = ?",
            (str(EventKind.DELIVERED), distribution_id),
        ).fetchall()
    if len(counts) != expected:
        raise BenchError(f"{len(counts)} recipients recorded, expected {expected}")
    wrong = [(a, n) for a, n in counts if n != 1]
    if wrong:
        raise BenchError(
            f"{len(wrong)} recipients without exactly one DELIVERED event: {wrong[:3]}"
        )


def mailbox_files(mail_root: Path, address: str) -> list[Path]:
    local, _, domain = address.lower().rpartition("@")
    maildir = mail_root / domain / local
    return [
        p for sub in ("new", "cur") if (maildir / sub).is_dir() for p in (maildir / sub).iterdir()
    ]


def check_mailboxes(mail_root: Path, recipients: list[str]) -> int:
    """Every recipient's mailbox holds exactly one message; returns the bytes stored."""
    wrong = []
    stored = 0
    for address in recipients:
        files = mailbox_files(mail_root, address)
        if len(files) != 1:
            wrong.append((address, len(files)))
        stored += sum(f.stat().st_size for f in files)
    if wrong:
        raise BenchError(f"{len(wrong)} mailboxes do not hold exactly one message: {wrong[:3]}")
    return stored


_TRACE = (b"return-path:", b"delivered-to:", b"received:")


def below_trace(raw: bytes) -> bytes:
    """The stored message without the trace fields Dovecot put on top (they hold times)."""
    lines = raw.split(b"\n")
    i = 0
    while i < len(lines) and lines[i].lower().startswith(_TRACE):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\n".join(lines[i:])


def check_sample(path: Path, pack: list[PackFile], number: str) -> str:
    """The message's attachments are the pack's PDFs (names and SHA-256); returns the SHA-256
    of the message below the trace fields (mailsvc's and the peer's must be equal)."""
    raw = path.read_bytes()
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    if number not in str(msg["Subject"]):
        raise BenchError(f"{path}: subject {msg['Subject']!r} does not name the session")
    got = []
    for part in msg.iter_attachments():
        payload = part.get_content()
        if not isinstance(payload, bytes):
            raise BenchError(f"{path}: attachment {part.get_filename()} is not binary")
        got.append((part.get_filename(), hashlib.sha256(payload).hexdigest()))
    want = [(f.filename, f.sha256) for f in pack]
    if got != want:
        raise BenchError(f"{path}: attachments {got} differ from the pack {want}")
    return hashlib.sha256(below_trace(raw)).hexdigest()


def wipe_mailboxes(mail_root: Path) -> float:
    """Remove every mailbox and write back what is dirty; returns the seconds it took."""
    started = time.perf_counter()
    if mail_root.is_dir():
        for child in mail_root.iterdir():
            shutil.rmtree(child)
    os.sync()
    return time.perf_counter() - started


# --- the machine while a phase runs ----------------------------------------------------------


def _cpu_times() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def _tree_cpu(root: int) -> float:
    """CPU seconds of a process and its living descendants, with their reaped children."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    total = 0
    for pid, ticks in times.items():
        p = pid
        while p not in (0, 1, root) and p in parents:
            p = parents[p]
        if p == root:
            total += ticks
    return total / os.sysconf("SC_CLK_TCK")


class MachineWatch:
    """What the whole machine and the stack (Dovecot with its children, slapd) did during a
    phase; "other" is CPU used by neither the measured process nor the stack: other work on a
    shared machine, and the kernel's writeback threads."""

    def __init__(self, stack_pids: tuple[int, ...]) -> None:
        self.stack_pids = stack_pids
        self.load_start = os.getloadavg()[0]
        self.cpu_start = _cpu_times()
        self.stack_start = sum(_tree_cpu(p) for p in stack_pids)
        self.started = time.perf_counter()

    def finish(self, process_cpu: float) -> dict[str, float]:
        seconds = time.perf_counter() - self.started
        end = _cpu_times()
        delta = [b - a for a, b in zip(self.cpu_start, end, strict=False)]
        total = sum(delta) or 1
        cores = len(os.sched_getaffinity(0))
        idle, iowait = delta[3], delta[4]
        busy = (total - idle - iowait) / total * cores
        stack = sum(_tree_cpu(p) for p in self.stack_pids) - self.stack_start
        return {
            "load_start": self.load_start,
            "load_end": os.getloadavg()[0],
            "busy_cores": busy,
            "iowait_cores": iowait / total * cores,
            "stack_cpu": stack,
            "other_cores": max(0.0, busy - (process_cpu + stack) / seconds),
        }


def wait_for_quiet(cores: float, patience: float) -> str:
    """Wait (at most ``patience`` s) until the machine's busy CPU over two seconds is below
    ``cores``; says what it found."""
    end = time.monotonic() + patience
    waited = time.monotonic()
    while True:
        before = _cpu_times()
        time.sleep(2.0)
        delta = [b - a for a, b in zip(before, _cpu_times(), strict=False)]
        cores_now = len(os.sched_getaffinity(0))
        busy = (sum(delta) - delta[3] - delta[4]) / (sum(delta) or 1) * cores_now
        if busy < cores or time.monotonic() > end:
            state = "quiet" if busy < cores else "still busy"
            return f"{state} ({busy:.2f} cores) after {time.monotonic() - waited:.0f} s"


def stack_pids(stack: LocalStack) -> tuple[int, ...]:
    pids = {s.name: s.pid for s in stack.status() if s.pid is not None}
    if "dovecot" not in pids or "slapd" not in pids:
        raise BenchError(f"the stack of {stack.settings.var_dir} is not running: {pids}")
    return (pids["dovecot"], pids["slapd"])


def dovecot_version() -> str:
    try:
        out = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    return out.split()[0] if out.strip() else "?"


# --- report ----------------------------------------------------------------------------------


def _step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    head = ("measure", "mailsvc", "raw LMTP replay", "goal")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    out = []
    for i, r in enumerate([head, *rows]):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _ms(seconds: float, n: int) -> str:
    return f"{seconds:.1f} s = {seconds / n * 1000:.0f} ms/msg"


def _each(values: list[float], fmt: str) -> str:
    return " + ".join(format(v, fmt) for v in values)


def report(
    args: argparse.Namespace,
    pack: list[PackFile],
    made: dict[str, Any],
    rounds: list[tuple[dict[str, Any], dict[str, Any], Rendered]],
    info: dict[str, str],
) -> None:
    ours = [o for o, _, _ in rounds]
    peer = [p for _, p, _ in rounds]
    r = rounds[0][2]
    n = len(r.recipients)
    done = n * len(rounds)  # deliveries per side
    pack_bytes = sum(f.size for f in pack)
    message = r.head_bytes / n + r.part_bytes
    a = sum(o["seconds"] for o in ours)
    b = sum(p["seconds"] for p in peer)
    ratio = a / b
    per_round = [o["seconds"] / p["seconds"] for o, p in zip(ours, peer, strict=True)]
    goal_rss = GOAL_RSS_FACTOR * pack_bytes + GOAL_RSS_EXTRA_MB * MB
    rss = max(o["max_rss_bytes"] for o in ours)

    def total(side: list[dict[str, Any]], key: str) -> float:
        return sum(float(x[key]) for x in side)

    def machine_total(side: list[dict[str, Any]], key: str) -> float:
        return sum(float(x["machine"][key]) for x in side)

    def weighted(side: list[dict[str, Any]], key: str) -> float:
        # cores averaged over the phases, weighted by their wall time
        weights = sum(float(x["machine"][key]) * float(x["seconds"]) for x in side)
        return weights / total(side, "seconds")

    # CPU is what the two cores are shared out by; it moves much less with other work than
    # wall time does, so its ratio says what the wall-time ratio would be on a quiet machine.
    cpu_a = total(ours, "cpu_seconds") + machine_total(ours, "stack_cpu")
    cpu_b = total(peer, "cpu_seconds") + machine_total(peer, "stack_cpu")
    pages = sum(p for _, p in made["documents"])
    cpu_ms = total(ours, "cpu_seconds") / done * 1000
    print()
    print(
        f"Distribution benchmark: a notice to {n:,} councillors, {len(rounds)} round(s) of "
        "mailsvc then the raw LMTP replay"
    )
    for key, value in info.items():
        print(f"  {key + ':':<9} {value}")
    print(
        f"  pack:     {len(pack)} PDFs, {pack_bytes / MB:.1f} MB, {pages} pages of random "
        f"images; attached (attach_max_bytes {args.attach_max_bytes / MB:.1f} MB)"
    )
    print(
        f"  message:  {message / MB:.2f} MB: a {r.head_bytes / n / 1024:.1f} KB personal head "
        f"+ {r.part_files} base64 part files; {n * message / 1e9:.1f} GB per phase"
    )
    sessions = ", ".join(f"{num} on {at}" for num, at in made["sessions"])
    print(
        f"  setup:    {made['created']:,} councillors in {made['import_seconds']:.1f} s; {sessions}"
    )
    print("  order:    per round mailsvc, then the replay of its messages, each into empty")
    print("            mailboxes after os.sync(); part files in the page cache for both")
    for k, (o, p, _) in enumerate(rounds, start=1):
        print(f"  round {k}:  before mailsvc {o['quiet']}; before the replay {p['quiet']}")
    print(f"  note:     {ours[0]['workers']} LMTP connections each (delivery.workers); no welcomes")
    print()
    rows = [
        (
            "wall time",
            f"{_each([o['seconds'] for o in ours], '.1f')} s",
            f"{_each([p['seconds'] for p in peer], '.1f')} s",
            "",
        ),
        (
            "  of which send() queueing",
            f"{_each([o['send_seconds'] for o in ours], '.1f')} s",
            "",
            "",
        ),
        ("deliveries/s", f"{done / a:.2f}", f"{done / b:.2f}", ""),
        (
            "MB/s delivered",
            f"{done * message / a / MB:.1f}",
            f"{total(peer, 'bytes_sent') / b / MB:.1f}",
            "",
        ),
        (
            "ratio mailsvc / replay",
            f"{ratio:.2f} (rounds: {', '.join(f'{x:.2f}' for x in per_round)})",
            "",
            f"≤ {GOAL_RATIO}: {_met(ratio <= GOAL_RATIO)}",
        ),
        (
            "peak RSS of the process",
            f"{rss / MB:.0f} MB ({max(o['rss_before_send'] for o in ours) / MB:.0f} before send)",
            f"{max(p['max_rss_bytes'] for p in peer) / MB:.0f} MB",
            f"≤ {goal_rss / MB:.0f} MB: {_met(rss <= goal_rss)}",
        ),
        (
            "CPU of the process",
            _ms(total(ours, "cpu_seconds"), done),
            _ms(total(peer, "cpu_seconds"), done),
            f"≤ {GOAL_CPU_MS} ms/msg: {_met(cpu_ms <= GOAL_CPU_MS)}",
        ),
        (
            "  of which in send()",
            _ms(total(ours, "send_cpu_seconds"), done),
            "",
            "",
        ),
        (
            "  of which in the kernel",
            _ms(total(ours, "cpu_system_seconds"), done),
            _ms(total(peer, "cpu_system_seconds"), done),
            "",
        ),
        (
            "CPU of Dovecot + slapd",
            _ms(machine_total(ours, "stack_cpu"), done),
            _ms(machine_total(peer, "stack_cpu"), done),
            "",
        ),
        ("CPU ratio (process + stack)", f"{cpu_a / cpu_b:.2f}", "", "≈ the wall ratio if quiet"),
        (
            "machine busy / iowait (cores)",
            f"{weighted(ours, 'busy_cores'):.2f} / {weighted(ours, 'iowait_cores'):.2f}",
            f"{weighted(peer, 'busy_cores'):.2f} / {weighted(peer, 'iowait_cores'):.2f}",
            "",
        ),
        (
            "other work (cores)",
            _each([o["machine"]["other_cores"] for o in ours], ".2f"),
            _each([p["machine"]["other_cores"] for p in peer], ".2f"),
            "",
        ),
        (
            "load average at the end",
            _each([o["machine"]["load_end"] for o in ours], ".2f"),
            _each([p["machine"]["load_end"] for p in peer], ".2f"),
            "",
        ),
        (
            "stored in the mailboxes",
            f"{_each([o['stored_bytes'] / 1e9 for o in ours], '.2f')} GB",
            f"{_each([p['stored_bytes'] / 1e9 for p in peer], '.2f')} GB",
            "",
        ),
    ]
    for line in _table(rows):
        print(line)
    print()
    samples = ", ".join(sorted({f"<{o['sample']}>" for o in ours}))
    print(
        f"Checked in each round: {n:,} recipients with exactly one DELIVERED receipt event and\n"
        f"one message each; the sampled message ({samples}) holds the\n"
        f"{len(pack)} PDFs with the right SHA-256 after both phases, its two copies identical\n"
        "below Dovecot's trace fields."
    )


def run_round(
    args: argparse.Namespace,
    bench: Bench,
    number: str,
    pack: list[PackFile],
    pids: tuple[int, ...],
    progress: int,
    label: str,
) -> tuple[dict[str, Any], dict[str, Any], Rendered]:
    """mailsvc's notice of session ``number``, then the replay of its messages, each into
    empty mailboxes after a quiet wait, with every check."""
    settings = bench.settings()
    mail_root = LocalStack(settings).paths.mail_root
    db_path = database_path(settings)
    count = args.recipients
    ours: dict[str, Any] = {"sync": wipe_mailboxes(mail_root)}
    ours["quiet"] = wait_for_quiet(args.quiet_below, args.quiet_wait)
    _step(f"{label}, mailsvc: notice of session {number} to {count:,} councillors")
    ours |= in_child(phase_mailsvc, bench, number, progress, pids)
    r = rendered(db_path, settings, ours["distribution_id"])
    if ours["queued"] != count or ours["delivered"] != count:
        raise BenchError(f"queued {ours['queued']}, delivered {ours['delivered']} of {count}")
    check_receipts(db_path, ours["distribution_id"], count)
    ours["stored_bytes"] = check_mailboxes(mail_root, r.recipients)
    sample = random.Random(args.seed).choice(r.recipients)
    (stored,) = mailbox_files(mail_root, sample)
    digest = check_sample(stored, pack, number)

    peer: dict[str, Any] = {"sync": wipe_mailboxes(mail_root)}
    peer["quiet"] = wait_for_quiet(args.quiet_below, args.quiet_wait)
    _step(f"{label}, peer: raw LMTP replay of the same {count:,} messages")
    peer |= in_child(phase_peer, bench, ours["distribution_id"], ours["workers"], progress, pids)
    if peer["refused_count"] or peer["delivered"] != count:
        raise BenchError(f"the replay delivered {peer['delivered']} of {count}: {peer['refused']}")
    peer["stored_bytes"] = check_mailboxes(mail_root, r.recipients)
    (stored,) = mailbox_files(mail_root, sample)
    if check_sample(stored, pack, number) != digest:
        raise BenchError(f"the replayed message for <{sample}> differs from mailsvc's")
    ours["sample"] = sample
    wipe_mailboxes(mail_root)
    return ours, peer, r


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Distribution benchmark: one notice with a large pack of PDFs to every "
        "councillor through mailsvc, beside a raw LMTP replay of the same messages.",
        epilog="example: .venv/bin/python bench/distribute.py --quick",
    )
    parser.add_argument(
        "--recipients", type=int, default=None, help=f"councillors ({DEFAULT_RECIPIENTS})"
    )
    parser.add_argument(
        "--pack-mb", type=float, default=DEFAULT_PACK_MB, help="size of the pack in MB (20)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_RECIPIENTS} recipients unless given"
    )
    parser.add_argument("--seed", type=int, default=2024, help="seed of roster and pack")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (mailboxes wiped)"
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.3,
        help="before each phase wait until other work uses fewer cores than this (0.3)…",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=120, help="…for at most this many seconds (120)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help=f"mailsvc + replay pairs, one session each, to even out other work ({DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--nodes",
        help="then the same notice through `mailsvc serve` nodes: one on SQLite and N on one "
        "PostgreSQL for each N listed, e.g. 1,2 (bench/distribute_nodes.py)",
    )
    args = parser.parse_args(argv)
    node_counts = parse_nodes(args.nodes)
    count = args.recipients or (QUICK_RECIPIENTS if args.quick else DEFAULT_RECIPIENTS)
    args.recipients = count
    if count < 1 or args.pack_mb <= 0:
        parser.error("--recipients and --pack-mb must be positive")
    if not 1 <= args.rounds <= len(SESSION_NUMBERS):
        parser.error(f"--rounds must be 1 to {len(SESSION_NUMBERS)}")
    pack_target = int(args.pack_mb * MB)

    work = Path(tempfile.mkdtemp(prefix="bench-distribute-", dir="/tmp"))
    work.chmod(0o711)  # Dovecot, run as root, delivers as the user "mail" below it
    expected_message = pack_target * 4 / 3 * 1.03 + 64 * 1024
    need = count * expected_message * 1.1 + 2e9
    free = shutil.disk_usage(work).free
    if free < need:
        shutil.rmtree(work)
        raise SystemExit(
            f"{free / 1e9:.0f} GB free in /tmp, the run needs about {need / 1e9:.0f} GB: "
            "use fewer --recipients or a smaller --pack-mb"
        )
    spec = StackSpec(str(work / "var"), *free_ports(4))
    probe = spec.settings()
    args.attach_max_bytes = max(probe.distribution.attach_max_bytes, pack_target + MB)
    bench = Bench(spec, args.attach_max_bytes)
    settings = bench.settings()
    stack = LocalStack(settings)
    mail_root = stack.paths.mail_root
    info = machine()
    info.pop("slapd", None)
    info["dovecot"] = dovecot_version()
    fsync_ms = fsync_probe(work)
    progress = max(1, count // 10)
    rounds: list[tuple[dict[str, Any], dict[str, Any], Rendered]] = []
    node_runs: list[NodesRun] = []
    try:
        _step(f"making the pack: {PACK_DOCUMENTS} PDFs, {args.pack_mb:g} MB")
        docs_dir = work / "pack"
        docs_dir.mkdir()
        pack = make_pack(docs_dir, pack_target, PACK_DOCUMENTS, args.seed)
        roster = work / "radni.csv"
        write_roster(roster, make_council(count, args.seed).people, "utf-8-sig")

        _step(f"starting slapd + Dovecot in {spec.var_dir} (LMTP port {spec.lmtp_port})")
        stack.up()
        _step(f"setup: importing {count:,} councillors, {args.rounds} session(s), the pack")
        made = in_child(setup, bench, str(roster), pack, args.rounds)
        if made["group_members"] != count:
            raise BenchError(f"group rada has {made['group_members']} members, not {count}")
        db_path = database_path(settings)
        keep_heads(db_path)
        pids = stack_pids(stack)
        for k, (number, _) in enumerate(made["sessions"]):
            label = f"round {k + 1}/{args.rounds}"
            ours, peer, r = run_round(args, bench, number, pack, pids, progress, label)
            rounds.append((ours, peer, r))
            # The next send encodes its part files afresh, as the first one did.
            shutil.rmtree(parts_dir(settings.var_dir), ignore_errors=True)
        if node_counts:
            _step(f"nodes: sqlite×1, then pg×{', pg×'.join(map(str, node_counts))}")
            wipe_mailboxes(mail_root)
            node_runs = run_nodes(
                settings, args.attach_max_bytes, node_counts, pack, count, mail_root,
                lambda: sum(_tree_cpu(pid) for pid in pids), work / "nodes",
            )  # fmt: skip
    except BenchError as exc:
        raise SystemExit(f"benchmark failed: {exc}") from None
    finally:
        _step("wiping the mailboxes and stopping the stack")
        try:
            wipe_mailboxes(mail_root)
            stack.down()
        except Exception as exc:  # report and go on cleaning up
            print(f"could not stop the stack in {spec.var_dir}: {exc}", file=sys.stderr)
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    info["disk"] = f"fdatasync of 4 KiB in /tmp {fsync_ms:.2f} ms (median of 50)"
    report(args, pack, made, rounds, info)
    if node_counts:
        print("\n".join(nodes_report(node_runs, args.pack_mb)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
