"""A small asyncio LMTP client (RFC 2033) that reads one reply per accepted recipient.

Python's ``smtplib.LMTP`` reads a single reply after DATA, which desynchronises the connection as
soon as a message has several recipients; this client does it right.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from mailsvc.domain.outcome import Reply
from mailsvc.errors import TemporaryFailure
from mailsvc.relay.delivery.sendfile import send_file

__all__ = ["LmtpClient", "LmtpUnavailable", "Reply", "encode_data", "stuff"]
from mailsvc.relay.delivery.body import PartedBody


class LmtpUnavailable(TemporaryFailure, ConnectionError):
    """The LMTP server cannot be reached or broke the conversation; retry later."""


def stuff(body: bytes) -> bytes:
    """CRLF line ends and dot-stuffing, ending with CRLF (no terminating dot line)."""
    # Bare LF → CRLF (bare CR is left alone): the same as a (?<!\r)\n regex, at C speed. A
    # body received over SMTP has none; counting is cheaper than copying it twice.
    data = body
    if body.count(b"\n") != body.count(b"\r\n"):
        data = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def encode_data(body: bytes) -> bytes:
    """CRLF line ends, dot-stuffing and the terminating dot line."""
    return stuff(body) + b".\r\n"


class LmtpClient:
    """One LMTP connection; ``deliver`` may be called repeatedly on it.

    The part files of a ``PartedBody`` go to the socket with ``sendfile`` where the connection
    allows it (relay.delivery.sendfile); ``zero_copy=False`` always copies them through Python
    (the way a TLS connection would take).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        lhlo: str = "mailsvc",
        timeout: float = 60.0,
        zero_copy: bool = True,
    ) -> None:
        self.host, self.port, self.lhlo, self.timeout = host, port, lhlo, timeout
        self.zero_copy = zero_copy
        # How many part files went which way ("loop.sendfile", "os.sendfile", "copy").
        self.part_files_sent: Counter[str] = Counter()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.extensions: set[str] = set()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
            greeting = await self._read_reply()
            if greeting.code != 220:
                raise LmtpUnavailable(f"LMTP {self.host}:{self.port} greeted with {greeting}")
            reply = await self._command(f"LHLO {self.lhlo}")
            if not reply.ok:
                raise LmtpUnavailable(f"LMTP {self.host}:{self.port} refused LHLO: {reply}")
            self.extensions = {
                line.split(" ", 1)[0].upper() for line in reply.text.splitlines()[1:]
            }
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise LmtpUnavailable(f"LMTP {self.host}:{self.port} unreachable: {exc}") from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        try:
            if not writer.is_closing():
                writer.write(b"QUIT\r\n")
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (OSError, TimeoutError):
            pass

    async def _read_reply(self, wait: float | None = None) -> Reply:
        assert self._reader is not None
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self._reader.readline(), wait or self.timeout)
            if not raw:
                raise LmtpUnavailable(f"LMTP {self.host}:{self.port} closed the connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit():
                raise LmtpUnavailable(f"LMTP {self.host}:{self.port} sent garbage: {line[:80]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), "\n".join(lines))

    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        if self._writer.is_closing():
            # The server went away: uvloop's transport would raise RuntimeError, asyncio's
            # would drop the data in silence.
            raise LmtpUnavailable(f"LMTP {self.host}:{self.port} closed the connection")
        self._writer.write(data)

    async def _command(self, line: str) -> Reply:
        assert self._writer is not None
        self._write(line.encode("utf-8") + b"\r\n")
        await self._writer.drain()
        return await self._read_reply()

    async def deliver(
        self,
        mail_from: str,
        recipients: Sequence[str],
        body: bytes | PartedBody,
        *,
        dsn_envid: str | None = None,
    ) -> dict[str, Reply]:
        """Deliver ``body`` to ``recipients``; returns the final reply for each recipient.

        ``dsn_envid`` is not used: LMTP's reply for a recipient already says the message is in
        the mailbox, so no delivery report is asked.

        Raises LmtpUnavailable when the conversation breaks before per-recipient results are
        known (every recipient should then be retried).
        """
        if not self.connected:
            await self.connect()
        try:
            return await self._transaction(mail_from, recipients, body)
        except (OSError, TimeoutError, LmtpUnavailable) as exc:
            await self.close()
            if isinstance(exc, LmtpUnavailable):
                raise
            raise LmtpUnavailable(f"LMTP {self.host}:{self.port} failed: {exc!r}") from exc

    async def _transaction(
        self, mail_from: str, recipients: Sequence[str], body: bytes | PartedBody
    ) -> dict[str, Reply]:
        params = ""
        head = body.head if isinstance(body, PartedBody) else body
        eight_bit = isinstance(body, PartedBody) and body.eight_bit
        if "8BITMIME" in self.extensions and (eight_bit or not head.isascii()):
            params += " BODY=8BITMIME"
        needs_utf8 = not (mail_from.isascii() and all(r.isascii() for r in recipients))
        if needs_utf8 and "SMTPUTF8" in self.extensions:
            params += " SMTPUTF8"
        results: dict[str, Reply] = {}
        if "PIPELINING" in self.extensions:
            # RFC 2033 makes PIPELINING mandatory for LMTP servers (RFC 2920): MAIL, every
            # RCPT and DATA in one write, then their replies in order.
            envelope = [f"MAIL FROM:<{mail_from}>{params}", *(f"RCPT TO:<{r}>" for r in recipients)]
            assert self._writer is not None
            self._write("".join(f"{c}\r\n" for c in [*envelope, "DATA"]).encode("utf-8"))
            await self._writer.drain()
            mail_reply = await self._read_reply()
            rcpt_replies = [await self._read_reply() for _ in recipients]
            reply = await self._read_reply()  # DATA
            if not mail_reply.ok:
                if reply.code == 354:  # a server that accepts DATA anyway: send nothing
                    await self._command(".")
                await self._command("RSET")
                return dict.fromkeys(recipients, mail_reply)
            results = dict(zip(recipients, rcpt_replies, strict=True))
            # In order and with repeats: after the data, one reply per accepted RCPT.
            accepted = [r for r, rr in zip(recipients, rcpt_replies, strict=True) if rr.ok]
            if not accepted:
                if reply.code == 354:
                    await self._command(".")
                await self._command("RSET")
                return results
        else:
            reply = await self._command(f"MAIL FROM:<{mail_from}>{params}")
            if not reply.ok:
                await self._command("RSET")
                return dict.fromkeys(recipients, reply)
            accepted = []
            for rcpt in recipients:
                reply = await self._command(f"RCPT TO:<{rcpt}>")
                results[rcpt] = reply
                if reply.ok:
                    accepted.append(rcpt)
            if not accepted:
                await self._command("RSET")
                return results
            reply = await self._command("DATA")
        if reply.code != 354:
            for rcpt in accepted:
                results[rcpt] = reply
            await self._command("RSET")
            return results
        assert self._writer is not None
        if isinstance(body, PartedBody):
            # The head is stuffed like any body; the part files need no stuffing (no line of
            # theirs starts with a dot, each ends with CRLF: body.encode_part; a spool file is
            # stored stuffed: storage.spool) and go to the socket as they are stored.
            self._write(stuff(body.head))
            for path, separator in body.tail():
                with path.open("rb") as fh:
                    way = await send_file(
                        self._writer, fh, stall_limit=self.timeout, zero_copy=self.zero_copy
                    )
                self.part_files_sent[way] += 1
                self._write(separator)
            self._write(b".\r\n")
        else:
            self._write(encode_data(body))  # one write, one send(): the body and its end
        await self._writer.drain()
        for rcpt in accepted:  # LMTP: one reply per accepted recipient, in order
            results[rcpt] = await self._read_reply(wait=max(self.timeout, 300))
        return results
