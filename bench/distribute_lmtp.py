"""The peer of the distribution benchmark: a minimal raw LMTP client (RFC 2033) that replays
already rendered messages into Dovecot, as fast as a plain program can.

Each connection is a thread with a blocking socket; a message is MAIL FROM, RCPT TO, DATA, the
dot-stuffed head, then each attachment part file sent with ``socket.sendfile`` (zero-copy from
the page cache) followed by its boundary line, then the terminating dot, and one reply per
recipient. No queue, no database, no retries: the lower bound for getting the same bytes into
the same mailboxes over the same protocol.
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

OK_REPLIES = range(200, 300)


class ReplayError(Exception):
    """The LMTP server broke the conversation or refused something a replay needs."""


@dataclass(frozen=True)
class Replay:
    """One rendered message: envelope, the head as stored, and the part files that follow it."""

    mail_from: str
    recipients: tuple[str, ...]
    head: bytes
    files: tuple[Path, ...]
    boundary: str

    def tail(self) -> list[tuple[Path, bytes]]:
        """Each part file with the boundary line after it (the closing one after the last)."""
        between = f"--{self.boundary}\r\n".encode("ascii")
        closing = f"--{self.boundary}--\r\n".encode("ascii")
        last = len(self.files) - 1
        return [(p, closing if i == last else between) for i, p in enumerate(self.files)]


def dot_stuffed(head: bytes) -> bytes:
    """The head as DATA content: CRLF line ends, ending with CRLF, leading dots doubled."""
    if head.count(b"\n") != head.count(b"\r\n"):
        raise ReplayError("the head has bare line feeds; the replay sends only CRLF heads")
    if not head.endswith(b"\r\n"):
        head += b"\r\n"
    if head.startswith(b"."):
        head = b"." + head
    return head.replace(b"\r\n.", b"\r\n..")


@dataclass
class ReplayResult:
    seconds: float
    delivered: int
    refused: list[str]  # "<recipient>: reply" for every recipient not answered 2xx
    bytes_sent: int


class _Conversation:
    """One LMTP connection over a blocking socket."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        code, text = self.reply()
        if code != 220:
            raise ReplayError(f"greeting {code} {text}")
        code, text = self.command("LHLO bench.distribute")
        if code not in OK_REPLIES:
            raise ReplayError(f"LHLO refused: {code} {text}")
        self.extensions = {line.split(" ", 1)[0].upper() for line in text.splitlines()[1:]}

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            raw = self.reader.readline(4096)
            if not raw:
                raise ReplayError("the server closed the connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit():
                raise ReplayError(f"not a reply: {line[:80]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def command(self, line: str) -> tuple[int, str]:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")
        return self.reply()

    def send(self, message: Replay) -> tuple[list[tuple[str, int, str]], int]:
        """One transaction; (recipient, code, text) for each recipient, and bytes of DATA."""
        params = " BODY=8BITMIME" if not message.head.isascii() else ""
        code, text = self.command(f"MAIL FROM:<{message.mail_from}>{params}")
        if code not in OK_REPLIES:
            raise ReplayError(f"MAIL FROM refused: {code} {text}")
        accepted = []
        out = []
        for rcpt in message.recipients:
            code, text = self.command(f"RCPT TO:<{rcpt}>")
            if code in OK_REPLIES:
                accepted.append(rcpt)
            else:
                out.append((rcpt, code, text))
        if not accepted:
            self.command("RSET")
            return out, 0
        code, text = self.command("DATA")
        if code != 354:
            raise ReplayError(f"DATA refused: {code} {text}")
        head = dot_stuffed(message.head)
        self.sock.sendall(head)
        sent = len(head)
        for path, separator in message.tail():
            with path.open("rb") as fh:
                sent += self.sock.sendfile(fh)
            self.sock.sendall(separator)
            sent += len(separator)
        self.sock.sendall(b".\r\n")
        for rcpt in accepted:
            code, text = self.reply()
            out.append((rcpt, code, text))
        return out, sent + 3

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, ReplayError):
            pass
        self.reader.close()
        self.sock.close()


def replay(
    host: str,
    port: int,
    messages: Sequence[Replay],
    *,
    connections: int,
    timeout: float = 300.0,
    progress: int = 0,
) -> ReplayResult:
    """Send every message over ``connections`` concurrent LMTP connections; the wall time runs
    from before the first connection to the last reply. ``progress`` > 0 prints a line to
    stderr every that many messages."""
    work: queue.SimpleQueue[Replay] = queue.SimpleQueue()
    for m in messages:
        work.put(m)
    lock = threading.Lock()
    refused: list[str] = []
    errors: list[BaseException] = []
    totals = {"delivered": 0, "bytes": 0, "done": 0}
    started = time.perf_counter()

    def worker() -> None:
        try:
            conversation = _Conversation(host, port, timeout)
        except (OSError, ReplayError) as exc:
            with lock:
                errors.append(exc)
            return
        try:
            while True:
                try:
                    message = work.get_nowait()
                except queue.Empty:
                    return
                answers, sent = conversation.send(message)
                with lock:
                    totals["bytes"] += sent
                    totals["done"] += 1
                    for rcpt, code, text in answers:
                        if code in OK_REPLIES:
                            totals["delivered"] += 1
                        else:
                            refused.append(f"<{rcpt}>: {code} {text}")
                    done = totals["done"]
                if progress and done % progress == 0:
                    seconds = time.perf_counter() - started
                    print(
                        f"    peer: {done:,}/{len(messages):,} messages, {seconds:.0f} s",
                        flush=True,
                        file=sys.stderr,
                    )
        except (OSError, ReplayError) as exc:
            with lock:
                errors.append(exc)
        finally:
            conversation.close()

    threads = [threading.Thread(target=worker, name=f"lmtp-replay-{i}") for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise ReplayError(f"{len(errors)} connection(s) failed, first: {errors[0]!r}")
    return ReplayResult(seconds, totals["delivered"], refused, totals["bytes"])
