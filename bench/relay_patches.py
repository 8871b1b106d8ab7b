"""Experiments for bench/relay.py: run `mailsvc serve` with named monkeypatches applied.

Nothing in mailsvc/ changes; each patch answers "what would this change be worth?" so that the
owners of the code can decide. Used through the bench:

    .venv/bin/python bench/relay.py --targets mailsvc --only 1k:10 --patch quiet-aiosmtpd

or directly: python bench/relay_patches.py --patch=smtp-init --patch=raw-queue serve

Patches (written against the queue and inbound code of the commit the figures name):
  quiet-aiosmtpd  aiosmtpd's "mail.log" logger at WARNING (it logs ~12 INFO lines per message)
  quiet           every logger at WARNING (upper bound for per-message logging)
  smtp-init       aiosmtpd's SMTP.__init__ without inspect.getmembers/signature per connection
  one-connection  the SQLite engine with one pooled connection (no writer contention)
  group-commit    concurrent enqueue() calls share one transaction (one fsync)
  raw-queue       enqueue/claim_next/record as whole units of work on one dedicated sqlite3
                  thread (one thread hop and one fsync per call, BEGIN IMMEDIATE, enqueues
                  group-committed) instead of statement by statement through async SQLAlchemy
  lmtp-fast       LMTP client: bytes.isascii() instead of a per-byte generator for the
                  8BITMIME check, and CRLF normalisation with bytes.replace instead of a regex
  fast-data       aiosmtpd's DATA read in one readuntil(CRLF.CRLF) and unstuffed with
                  bytes.replace instead of line by line (same end-of-data rule; the sketch keeps
                  the size limit but not the 1000-byte line limit)
  count-calls     diagnostic: log how often each MailQueue method runs (every 5 s, at WARNING)
  time-phases     diagnostic: log percentiles of the acceptor's phases (session, DATA,
                  authentication, enqueue, the queue's unit) every 5 s, at WARNING
  inline-units    experiment: the queue's units of work run on the event loop's thread (no
                  thread hop; the loop waits for the commit's fsync)
  uvloop          uvloop's event loop (if importable, e.g. pip install --target DIR uvloop and
                  RELAY_UVLOOP_PATH=DIR)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import secrets
import sqlite3
import sys
import threading
import types
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(func: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = func
        return func

    return register


def _after_logging_setup(levels: dict[str, int]) -> None:
    from mailsvc.cli import main as cli

    original = cli._configure_logging

    def configure(verbose: bool = False, log_format: str = "text") -> None:
        original(verbose, log_format)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)

    cli._configure_logging = configure  # type: ignore[assignment]


@patch("quiet-aiosmtpd")
def quiet_aiosmtpd() -> None:
    _after_logging_setup({"mail.log": logging.WARNING})


@patch("quiet")
def quiet() -> None:
    _after_logging_setup({"": logging.WARNING, "mail.log": logging.WARNING})


@patch("smtp-init")
def smtp_init() -> None:
    """aiosmtpd.smtp uses inspect only in SMTP.__init__: getmembers(obj) to find auth_* methods
    and signature(handle_EHLO). Answer both from a per-class cache, bound to the new object."""
    import aiosmtpd.smtp as smtp_module

    auth_names: dict[type, list[str]] = {}
    signatures: dict[Any, inspect.Signature] = {}

    def getmembers(obj: Any, predicate: Any = None) -> list[tuple[str, Any]]:
        names = auth_names.get(type(obj))
        if names is None:
            names = [n for n, _ in inspect.getmembers(obj) if n.startswith("auth_")]
            auth_names[type(obj)] = names
        return [(n, getattr(obj, n)) for n in names]

    def signature(func: Any) -> inspect.Signature:
        key = getattr(func, "__func__", func)
        sig = signatures.get(key)
        if sig is None:
            sig = signatures[key] = inspect.signature(func)
        return sig

    shim = types.SimpleNamespace(getmembers=getmembers, signature=signature)
    smtp_module.inspect = shim  # type: ignore[attr-defined]


@patch("one-connection")
def one_connection() -> None:
    from mailsvc.storage import db

    original = db.create_async_engine

    def create(url: Any, **kwargs: Any) -> Any:
        if str(url).startswith("sqlite"):
            kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
        return original(url, **kwargs)

    db.create_async_engine = create


@patch("group-commit")
def group_commit() -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from mailsvc.errors import StorageUnavailable
    from mailsvc.storage import queue as queue_module
    from mailsvc.storage.db import utcnow
    from mailsvc.storage.tables import deliveries, messages

    Pending = tuple[str, Sequence[str], bytes, str, "asyncio.Future[str]"]
    state: dict[int, tuple[list[Pending], list[asyncio.Task[None]]]] = {}

    async def flush(self: Any, pending: list[Pending]) -> None:
        while pending:
            batch = pending[:]
            del pending[:]
            now = utcnow()
            ids = []
            try:
                async with self.engine.begin() as conn:
                    for mail_from, recipients, body, client, _ in batch:
                        queue_id = secrets.token_hex(8)
                        result = await conn.execute(
                            messages.insert().values(
                                queue_id=queue_id,
                                mail_from=mail_from,
                                received_at=now,
                                size=len(body),
                                client=client,
                                body=body,
                                status="queued",
                            )
                        )
                        message_id = result.inserted_primary_key[0]
                        await conn.execute(
                            deliveries.insert(),
                            [
                                {
                                    "message_id": message_id,
                                    "recipient": rcpt,
                                    "status": "queued",
                                    "attempts": 0,
                                    "next_attempt_at": now,
                                    "updated_at": now,
                                }
                                for rcpt in recipients
                            ],
                        )
                        ids.append(queue_id)
            except SQLAlchemyError as exc:
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(StorageUnavailable(f"queue could not store: {exc}"))
                continue
            for queue_id, (*_, fut) in zip(ids, batch, strict=True):
                if not fut.done():
                    fut.set_result(queue_id)

    async def enqueue(
        self: Any, mail_from: str, recipients: Sequence[str], body: bytes, client: str = ""
    ) -> str:
        pending, tasks = state.setdefault(id(self), ([], []))
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        pending.append((mail_from, recipients, body, client, fut))
        if not tasks or tasks[0].done():
            tasks[:] = [asyncio.create_task(flush(self, pending))]
        return await fut

    queue_module.MailQueue.enqueue = enqueue  # type: ignore[method-assign]


def _ts(value: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


@patch("raw-queue")
def raw_queue() -> None:
    from sqlalchemy.engine import make_url

    from mailsvc.errors import StorageUnavailable
    from mailsvc.storage import queue as queue_module
    from mailsvc.storage.db import utcnow
    from mailsvc.storage.queue import PENDING, SETTLED, QueuedMessage

    MailQueue = queue_module.MailQueue
    original_init = MailQueue.__init__
    # The SQL below spells out the queue's status sets; refuse to run if they have changed.
    assert PENDING == ("queued", "deferred") and SETTLED == ("delivered", "failed", "dead")

    class Store:
        """One sqlite3 connection on one thread; enqueues waiting meanwhile commit together."""

        def __init__(self, path: str) -> None:
            self.path = path
            self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="queue-db")
            self.conn: sqlite3.Connection | None = None
            self.lock = threading.Lock()
            self.waiting: list[tuple[Any, asyncio.Future[str], asyncio.AbstractEventLoop]] = []
            self.flush_scheduled = False

        def db(self) -> sqlite3.Connection:
            if self.conn is None:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA busy_timeout=30000")
                self.conn = conn
            return self.conn

        async def call(self, func: Callable[..., Any], *args: Any) -> Any:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self.pool, func, *args)
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"queue: {exc}") from exc

        # enqueue with group commit
        async def enqueue(self, item: tuple[str, Sequence[str], bytes, str]) -> str:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[str] = loop.create_future()
            with self.lock:
                self.waiting.append((item, fut, loop))
                schedule = not self.flush_scheduled
                self.flush_scheduled = True
            if schedule:
                self.pool.submit(self._flush)
            return await fut

        def _flush(self) -> None:
            with self.lock:
                batch, self.waiting = self.waiting, []
                self.flush_scheduled = False
            if not batch:
                return
            conn = self.db()
            now = _ts(utcnow())
            results: list[Any] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for (mail_from, recipients, body, client), _, _ in batch:
                    queue_id = secrets.token_hex(8)
                    cur = conn.execute(
                        "INSERT INTO messages (queue_id, mail_from, received_at, size, client, "
                        "body, status) VALUES (?, ?, ?, ?, ?, ?, 'queued')",
                        (queue_id, mail_from, now, len(body), client, body),
                    )
                    conn.executemany(
                        "INSERT INTO deliveries (message_id, recipient, status, attempts, "
                        "next_attempt_at, updated_at) VALUES (?, ?, 'queued', 0, ?, ?)",
                        [(cur.lastrowid, rcpt, now, now) for rcpt in recipients],
                    )
                    results.append(queue_id)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                error = StorageUnavailable(f"queue could not store the message: {exc}")
                results = [error] * len(batch)
            for result, (_, fut, loop) in zip(results, batch, strict=True):
                loop.call_soon_threadsafe(_settle, fut, result)

        def claim(self, now_dt: datetime) -> QueuedMessage | None:
            conn = self.db()
            now = _ts(now_dt)
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT message_id FROM deliveries WHERE status IN ('queued', 'deferred') "
                    "AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT 1",
                    (now,),
                ).fetchone()
                if row is None:
                    conn.execute("COMMIT")
                    return None
                message_id = row[0]
                due = conn.execute(
                    "SELECT id, recipient, attempts FROM deliveries WHERE message_id = ? "
                    "AND status IN ('queued', 'deferred') AND next_attempt_at <= ?",
                    (message_id, now),
                ).fetchall()
                conn.executemany(
                    "UPDATE deliveries SET status = 'inflight', updated_at = ? WHERE id = ?",
                    [(now, d[0]) for d in due],
                )
                msg = conn.execute(
                    "SELECT queue_id, mail_from, received_at, body FROM messages WHERE id = ?",
                    (message_id,),
                ).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return QueuedMessage(
                id=message_id,
                queue_id=msg[0],
                mail_from=msg[1],
                received_at=datetime.fromisoformat(msg[2]),
                body=msg[3] or b"",
                deliveries=tuple((d[0], d[1], d[2]) for d in due),
            )

        def record(
            self,
            message_id: int,
            outcomes: Sequence[tuple[int, str, str, datetime | None]],
            now_dt: datetime,
        ) -> None:
            conn = self.db()
            now = _ts(now_dt)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "UPDATE deliveries SET status = ?, last_reply = ?, attempts = attempts + 1, "
                    "next_attempt_at = ?, updated_at = ? WHERE id = ?",
                    [
                        (status, reply, _ts(next_at) if next_at else now, now, delivery_id)
                        for delivery_id, status, reply, next_at in outcomes
                    ],
                )
                (open_left,) = conn.execute(
                    "SELECT count(*) FROM deliveries WHERE message_id = ? "
                    "AND status NOT IN ('delivered', 'failed', 'dead')",
                    (message_id,),
                ).fetchone()
                if open_left == 0:
                    conn.execute(
                        "UPDATE messages SET status = 'done', body = NULL WHERE id = ?",
                        (message_id,),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def init(self: Any, engine: Any) -> None:
        original_init(self, engine)
        url = make_url(str(engine.url))
        self._raw = Store(url.database) if url.get_backend_name() == "sqlite" else None

    async def enqueue(
        self: Any, mail_from: str, recipients: Sequence[str], body: bytes, client: str = ""
    ) -> str:
        result: str = await self._raw.enqueue((mail_from, list(recipients), body, client))
        return result

    async def claim_next(self: Any) -> QueuedMessage | None:
        result: QueuedMessage | None = await self._raw.call(self._raw.claim, utcnow())
        return result

    async def record(
        self: Any, message_id: int, outcomes: Sequence[tuple[int, str, str, datetime | None]]
    ) -> None:
        await self._raw.call(self._raw.record, message_id, list(outcomes), utcnow())

    MailQueue.__init__ = init  # type: ignore[method-assign]
    MailQueue.enqueue = enqueue  # type: ignore[method-assign]
    MailQueue.claim_next = claim_next  # type: ignore[method-assign]
    MailQueue.record = record  # type: ignore[method-assign]


def _settle(fut: asyncio.Future[str], result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


@patch("lmtp-fast")
def lmtp_fast() -> None:
    from mailsvc.relay.delivery import lmtp

    def encode_data(body: bytes) -> bytes:
        data = body
        if data.count(b"\n") != data.count(b"\r\n"):  # bare LF somewhere: make it CRLF
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        if data.startswith(b"."):
            data = b"." + data
        return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"

    class FastBody(bytes):
        """A body whose per-byte iteration answers the 8BITMIME check at C speed."""

        def __iter__(self) -> Any:
            return iter((128,) if not self.isascii() else ())

    original = lmtp.LmtpClient._transaction

    async def transaction(self: Any, mail_from: str, recipients: Any, body: bytes) -> Any:
        return await original(self, mail_from, recipients, FastBody(body))

    lmtp.encode_data = encode_data
    lmtp.LmtpClient._transaction = transaction  # type: ignore[method-assign]


@patch("fast-data")
def fast_data() -> None:
    import aiosmtpd.smtp as smtp_module
    from aiosmtpd.smtp import MISSING, SMTP, syntax

    @syntax("DATA")
    async def smtp_DATA(self: Any, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.data_size_limit or 1 << 30
        reader = self._reader
        saved = reader._limit
        reader._limit = limit + 5
        parts: list[bytes] = []
        total = 0
        try:
            while True:
                # Every ".\r\n" is a candidate; it ends the data only at the start of a line.
                chunk = await reader.readuntil(b".\r\n")
                parts.append(chunk)
                total += len(chunk)
                if total > limit + 3:
                    raise asyncio.LimitOverrunError("too much mail data", 0)
                if total == 3:
                    break  # the first line is the dot: empty message
                tail = (parts[-2][-2:] if len(parts) > 1 else b"") + chunk
                if tail.endswith(b"\r\n.\r\n"):
                    break
        except asyncio.LimitOverrunError:
            # the sketch refuses and hangs up instead of draining the rest
            await self.push("552 Error: Too much mail data")
            self.transport.close()
            return
        finally:
            reader._limit = saved
        raw = b"".join(parts)[:-3]
        if raw.startswith(b"."):
            raw = raw[1:]
        original_content = raw.replace(b"\r\n.", b"\r\n")
        self.envelope.content = original_content
        self.envelope.original_content = original_content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    SMTP.smtp_DATA = smtp_DATA  # type: ignore[method-assign]
    del smtp_module


@patch("count-calls")
def count_calls() -> None:
    import collections
    import time

    from mailsvc.storage import queue as queue_module

    counts: collections.Counter[str] = collections.Counter()
    log = logging.getLogger("relay_patches")
    last = [time.monotonic()]

    def wrap(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            result = await func(*args, **kwargs)
            if name == "claim_next" and result is None:
                counts["claim_next (nothing due)"] += 1
            if time.monotonic() - last[0] > 5:
                last[0] = time.monotonic()
                log.warning("queue calls so far: %s", dict(counts))
            return result

        return counted

    for name, func in list(vars(queue_module.MailQueue).items()):
        if inspect.iscoroutinefunction(func):
            setattr(queue_module.MailQueue, name, wrap(name, func))


@patch("time-phases")
def time_phases() -> None:
    import collections
    import time

    from mailsvc.relay.smtp import inbound, server
    from mailsvc.storage import queue as queue_module
    from mailsvc.storage import units as units_module

    spans: collections.defaultdict[str, list[float]] = collections.defaultdict(list)
    log = logging.getLogger("relay_patches")
    last = [time.monotonic()]

    def report() -> None:
        if time.monotonic() - last[0] < 5:
            return
        last[0] = time.monotonic()
        parts = []
        for name, values in sorted(spans.items()):
            values.sort()
            n = len(values)
            p50, p90 = values[n // 2] * 1e3, values[n * 9 // 10] * 1e3
            parts.append(f"{name}: n={n} p50={p50:.3f} p90={p90:.3f} ms")
        log.warning("phases: %s", "; ".join(parts))

    def timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                spans[name].append(time.perf_counter() - start)
                report()

        return wrapper

    def timed_sync(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spans[name].append(time.perf_counter() - start)

        return wrapper

    queue_module.MailQueue.enqueue = timed("enqueue", queue_module.MailQueue.enqueue)  # type: ignore[method-assign]
    inbound.authenticate = timed("authenticate", inbound.authenticate)
    inbound.InboundHandler.handle_DATA = timed("handle_DATA", inbound.InboundHandler.handle_DATA)  # type: ignore[method-assign]
    server.CouncilSMTP.smtp_DATA = timed("smtp_DATA", server.CouncilSMTP.smtp_DATA)  # type: ignore[method-assign]
    units = units_module.ThreadUnits
    units._execute_held = timed_sync("unit", units._execute_held)  # type: ignore[method-assign]
    original_flock = units_module.fcntl.flock

    def flock(fd: int, op: int) -> None:
        start = time.perf_counter()
        original_flock(fd, op)
        if op == units_module.fcntl.LOCK_EX:
            spans["flock wait"].append(time.perf_counter() - start)

    real = units_module.fcntl
    units_module.fcntl = types.SimpleNamespace(  # type: ignore[assignment]
        flock=flock, LOCK_EX=real.LOCK_EX, LOCK_UN=real.LOCK_UN, LOCK_NB=real.LOCK_NB
    )


@patch("inline-units")
def inline_units() -> None:
    from mailsvc.storage import units as units_module

    async def run(self: Any, work: Callable[..., Any], *, durable: bool = True) -> Any:
        return self._execute(work, durable)

    units_module.ThreadUnits.run = run  # type: ignore[method-assign]


@patch("uvloop")
def use_uvloop() -> None:
    extra = os.environ.get("RELAY_UVLOOP_PATH")
    if extra:
        sys.path.append(extra)
    import uvloop  # type: ignore[import-not-found]

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str]) -> int:
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith("--patch=")]
    rest = [a for a in argv if not a.startswith("--patch=")]
    for name in chosen:
        if name not in PATCHES:
            print(f"unknown patch {name!r}; known: {', '.join(PATCHES)}", file=sys.stderr)
            return 2
        PATCHES[name]()
        print(f"relay_patches: applied {name}", file=sys.stderr, flush=True)
    from mailsvc.cli.main import main as mailsvc_main

    return mailsvc_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
