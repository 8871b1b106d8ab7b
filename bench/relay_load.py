"""A bounded asyncio SMTP load client for bench/relay.py that records accept latency.

Run as its own process, so that its CPU use is not mixed with the orchestrator's:

    python bench/relay_load.py --port 2525 --count 2000 --sessions 10 --size 1024 \
        --to a@rada.miasto.example,b@rada.miasto.example

Like smtp-source (without -d), every message gets its own connection: connect, EHLO, MAIL, RCPT,
DATA, 250, QUIT. Latency is the time from starting the connection to the 250 after the final
dot, i.e. what a sending MTA waits for before it may forget the message. ``--reuse`` keeps one
connection per session instead. Prints one JSON object; exits 1 if any message was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate

LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n"


class Refused(Exception):
    """The server answered a command with an unexpected reply."""


@dataclass
class Result:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def body(size: int) -> bytes:
    """``size`` bytes of 78-byte CRLF lines (no line starts with a dot)."""
    lines, rest = divmod(size, len(LINE))
    tail = (b"x" * max(0, rest - 2) + b"\r\n") if rest >= 2 else b""
    return LINE * lines + tail


def message(mail_from: str, rcpt: str, seq: int, payload: bytes) -> bytes:
    """A whole DATA stream: headers, payload and the terminating dot line."""
    headers = (
        f"From: <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: relay benchmark {seq}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\nMessage-ID: <bench.{seq}.{time.time_ns()}@example.net>"
        "\r\n\r\n"
    ).encode("ascii")
    return headers + payload + b".\r\n"


async def _reply(reader: asyncio.StreamReader, expected: int, what: str) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise Refused(f"{what}: connection closed")
        if line[3:4] != b"-":
            break
    if not line[:3].isdigit() or int(line[:3]) != expected:
        raise Refused(f"{what}: {line.decode('utf-8', 'replace').strip()}")


class Session:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        await _reply(self.reader, 220, "greeting")
        self.writer.write(b"EHLO bench.example.net\r\n")
        await _reply(self.reader, 250, "EHLO")

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> None:
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"MAIL FROM:<{mail_from}>\r\n".encode())
        await _reply(self.reader, 250, "MAIL")
        self.writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
        await _reply(self.reader, 250, "RCPT")
        self.writer.write(b"DATA\r\n")
        await _reply(self.reader, 354, "DATA")
        self.writer.write(data)
        await _reply(self.reader, 250, "end of data")

    async def close(self) -> None:
        if self.writer is None:
            return
        writer, reader = self.writer, self.reader
        self.writer = self.reader = None
        try:
            writer.write(b"QUIT\r\n")
            if reader is not None:
                await asyncio.wait_for(reader.read(), 5)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


async def run(
    host: str,
    port: int,
    count: int,
    sessions: int,
    size: int,
    recipients: list[str],
    mail_from: str,
    reuse: bool,
    step_timeout: float,
    deadline: float,
) -> tuple[Result, float]:
    payload = body(size)
    result = Result()
    numbers = itertools.count()
    end = time.monotonic() + deadline

    async def worker() -> None:
        session: Session | None = None
        try:
            while time.monotonic() < end:
                seq = next(numbers)
                if seq >= count:
                    return
                rcpt = recipients[seq % len(recipients)]
                data = message(mail_from, rcpt, seq, payload)
                started = time.perf_counter()
                try:
                    if session is None:
                        session = Session(host, port, step_timeout)
                        await asyncio.wait_for(session.open(), step_timeout)
                    await asyncio.wait_for(session.send(mail_from, rcpt, data), step_timeout)
                except (OSError, TimeoutError, Refused) as exc:
                    result.errors.append(f"message {seq}: {exc!r}"[:300])
                    if session is not None:
                        await session.close()
                    session = None
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.sent += 1
                if not reuse:
                    await session.close()
                    session = None
        finally:
            if session is not None:
                await session.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return result, time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--size", type=int, default=1024, help="payload bytes (headers come on top)")
    p.add_argument("--to", required=True, help="recipients, comma-separated, used in turn")
    p.add_argument("--from", dest="mail_from", default="mieszkaniec@example.net")
    p.add_argument("--reuse", action="store_true", help="one connection per session")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per SMTP step")
    p.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole load")
    args = p.parse_args(argv)
    recipients = [r for r in args.to.split(",") if r]
    result, elapsed = asyncio.run(
        run(
            args.host,
            args.port,
            args.count,
            args.sessions,
            args.size,
            recipients,
            args.mail_from,
            args.reuse,
            args.timeout,
            args.deadline,
        )
    )
    out = {
        "sent": result.sent,
        "elapsed": elapsed,
        "rate": result.sent / elapsed if elapsed > 0 else 0.0,
        "p50": percentile(result.latencies, 0.50),
        "p90": percentile(result.latencies, 0.90),
        "p99": percentile(result.latencies, 0.99),
        "max": max(result.latencies, default=float("nan")),
        "errors": len(result.errors),
        "first_errors": result.errors[:5],
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
