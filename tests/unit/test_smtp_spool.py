"""Bodies spooled to disk while they arrive (``smtp.spool_threshold``, ``storage.spool``).

The spooled path must hand the mailbox store exactly the bytes the in-memory path would: the
head as the handler sees it, then the spool file as stored, is compared with what the LMTP
client makes of aiosmtpd's own body (``stuff``) for the tricky bodies of test_smtp_data, cut in
many ways. Whatever ends a body early (a limit, a lost connection) leaves no file behind.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailsvc.relay.delivery.lmtp import stuff
from mailsvc.relay.smtp.server import ConnectionLimiter, CouncilSMTP
from mailsvc.storage.spool import (
    SpooledBody,
    SpoolWriter,
    normalize_wire,
    remove_orphans,
    spool_dir,
    stored_parts,
    stored_size,
)

from .test_smtp_data import BODIES, HEAD, MemoryTransport, Reference, _settle, cuts

THRESHOLD = 16  # tiny: every body with a header end is spooled


class Keeper:
    """Records what DATA hands over; takes the spool file, as the inbound handler does."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes | None]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        spooled: SpooledBody | None = getattr(envelope, "spooled", None)
        wire = None
        if spooled is not None:
            wire = spooled.path.read_bytes()
            assert spooled.size == len(wire)
            assert spooled.eight_bit == (not wire.isascii())
            assert spooled.path.stat().st_mode & 0o777 == 0o600
        self.seen.append((envelope.original_content, wire))
        return "250 2.0.0 queued"


async def run(
    cls: type[CouncilSMTP], handler: Any, pieces: list[bytes], spool: Path | None, limit: int | None
) -> tuple[bytes, Any]:
    proto = cls(
        handler,
        limiter=ConnectionLimiter(10, 10),
        max_bad_commands=10_000,
        data_size_limit=limit,
        decode_data=False,
        enable_SMTPUTF8=True,
        hostname="mx.test",
        ident="t",
        timeout=60,
        spool_dir=spool,
        spool_threshold=THRESHOLD,
    )
    transport = MemoryTransport()
    proto.connection_made(transport)
    await _settle(proto)
    for piece in pieces:
        proto.data_received(piece)
        await _wait(proto)
    proto.connection_lost(None)
    await _settle(proto)
    return bytes(transport.out), handler


async def _wait(proto: SMTP) -> None:
    """Until the protocol waits for more data or has ended (the spool file is made durable
    in a thread, which takes longer than a few turns of the loop)."""
    task = proto._handler_coroutine
    reader: Any = proto._reader
    for _ in range(2000):
        await _settle(proto)
        if task is None or task.done() or reader._waiter is not None:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the SMTP task did not settle")


class Plain:
    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        self.seen.append(envelope.original_content)
        return "250 2.0.0 queued"


@pytest.mark.parametrize("limit", [None, 1003])
@pytest.mark.parametrize("index", range(len(BODIES)))
async def test_lmtp_stream_is_the_same_as_from_memory(
    index: int, limit: int | None, tmp_path: Path
) -> None:
    stream = HEAD + BODIES[index]
    for n, pieces in enumerate(cuts(stream, seed=index)):
        if n > 12:  # the byte-by-byte and two-piece cuts come first: enough here
            break
        expected_out, plain = await run(Reference, Plain(), pieces, None, limit)
        directory = tmp_path / f"spool{n}"
        out, keeper = await run(CouncilSMTP, Keeper(), pieces, directory, limit)
        assert out == expected_out, pieces
        assert len(keeper.seen) == len(plain.seen)
        for (head, wire), whole in zip(keeper.seen, plain.seen, strict=True):
            if wire is None:
                assert head == whole
                continue
            assert head.endswith(b"\r\n")
            assert stuff(head) + wire == stuff(whole), pieces
        left = list(directory.iterdir()) if directory.exists() else []
        # Every spooled file was handed to the handler, which read it; none was left
        # behind by a refused or cut-off body. (Keeper does not take them: all removed.)
        assert left == []


async def test_a_body_past_the_threshold_is_spooled_and_only_its_header_kept(
    tmp_path: Path,
) -> None:
    body = b"Subject: big\r\n\r\n" + b"..dot\r\n" + b"text\r\n" * 100
    _, keeper = await run(CouncilSMTP, Keeper(), [HEAD, body, b".\r\n"], tmp_path, None)
    [(head, wire)] = keeper.seen
    assert head == b"Subject: big\r\n\r\n"
    assert wire == b"..dot\r\n" + b"text\r\n" * 100  # as on the wire: stuffed


def test_bare_lf_is_normalised_with_its_dot_stuffed() -> None:
    # "\n.\r\n" in a body: not an end of data in SMTP, and must not become one further on.
    assert normalize_wire(b"a\n.\r\n") == b"a\r\n..\r\n"
    assert normalize_wire(b"..x\r\nb\n.y\r\n") == b"..x\r\nb\r\n..y\r\n"
    assert normalize_wire(b"plain\r\n..dot\r\n") == b"plain\r\n..dot\r\n"
    # A lone leading dot is removed by SMTP (RFC 5321 4.5.2), whatever follows it.
    assert normalize_wire(b".x\r\n.\rMAIL\r\n") == b"x\r\n\rMAIL\r\n"


async def test_header_over_the_limit_is_refused_and_nothing_stays(tmp_path: Path) -> None:
    header = b"X-Long: " + b"a" * 900 + b"\r\n"
    body = header * 1300 + b"\r\nbody\r\n.\r\n"  # about 1.2 MB of header
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    out, keeper = await run(CouncilSMTP, Keeper(), [HEAD, *pieces], tmp_path / "s", None)
    assert b"552 5.3.4 Error: message header too large" in out
    assert keeper.seen == []
    assert not (tmp_path / "s").exists() or list((tmp_path / "s").iterdir()) == []


async def test_size_limit_after_spooling_removes_the_file(tmp_path: Path) -> None:
    line = b"x" * 70 + b"\r\n"
    # Over the reader's quiet buffer (256 KiB), so that the body is read and spooled before
    # the rest arrives and passes the size limit.
    first = b"Subject: big\r\n\r\n" + line * 4000
    pieces = [HEAD, first, line * 12000, b".\r\n"]
    directory = tmp_path / "s"
    out, keeper = await run(CouncilSMTP, Keeper(), pieces, directory, 1_000_000)
    assert out.endswith(b"552 5.3.4 Message too big for this system\r\n") and keeper.seen == []
    assert directory.is_dir() and list(directory.iterdir()) == []


async def test_connection_lost_mid_body_removes_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    proto = CouncilSMTP(
        Keeper(),
        limiter=ConnectionLimiter(10, 10),
        max_bad_commands=100,
        hostname="mx.test",
        spool_dir=directory,
        spool_threshold=THRESHOLD,
    )
    proto.connection_made(MemoryTransport())
    await _settle(proto)
    proto.data_received(HEAD + b"Subject: x\r\n\r\n" + b"line\r\n" * 1000)
    await _wait(proto)
    assert len(list(directory.iterdir())) == 1  # being written
    proto.connection_lost(None)
    for _ in range(20):
        await asyncio.sleep(0)
    assert list(directory.iterdir()) == []


def test_writer_is_durable_and_private(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "spool")
    writer.write_lines(b"caf\xc3\xa9\r\n")
    writer.write_lines(b"half a line\r\n", crlfs=1)
    body = writer.finish()
    assert body.path.read_bytes() == b"caf\xc3\xa9\r\nhalf a line\r\n"
    assert body.eight_bit and body.size == len(body.path.read_bytes())
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert stored_size(b"head", stored_parts(body)) == 4 + body.size
    assert stored_size(b"head", None) == 4


def test_orphans_are_removed_but_not_files_in_use_or_being_written(tmp_path: Path) -> None:
    directory = spool_dir(tmp_path)
    directory.mkdir()
    old = time.time() - 3600
    for name in ("used.msg", "orphan.msg", "fresh.msg", "other.txt"):
        (directory / name).write_bytes(b"x")
        if name != "fresh.msg":
            os.utime(directory / name, (old, old))
    removed = remove_orphans(tmp_path, {"used.msg"}, older_than=600)
    assert removed == ["orphan.msg"]
    assert sorted(p.name for p in directory.iterdir()) == ["fresh.msg", "other.txt", "used.msg"]
