"""Large resident messages on the real stack: spooled to disk while they arrive, delivered from
the spool file to Dovecot, the file removed once delivered; memory per session stays small."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select

from mailsvc.app import Service, start_service
from mailsvc.config import Settings
from mailsvc.storage.spool import spool_dir
from mailsvc.storage.tables import messages

from .conftest import make_message, smtp_send, wait_for_deliveries, wait_for_inbox


def _spool_files(settings: Settings) -> list[str]:
    directory = spool_dir(settings.var_dir)
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def _large_text() -> str:
    # 8-bit text, lines that start with dots (stuffed on the wire), about 3 MB.
    lines = [f"{i:06d} Zażółć gęślą jaźń — punkt porządku obrad" for i in range(60_000)]
    lines[10] = "."
    lines[11] = "..dwie kropki"
    lines[12] = ".kropka na początku"
    return "\n".join(lines) + "\n"


async def test_large_message_is_spooled_kept_across_a_restart_delivered_and_removed(
    settings: Settings, directory: Any, add_councillor: Callable[..., Any], local_stack: Any
) -> None:
    # The session's var_dir is shared by the files a worker runs: files an earlier test left
    # (its service stopped with a large message still queued) belong to databases gone now.
    shutil.rmtree(spool_dir(settings.var_dir), ignore_errors=True)
    account = await add_councillor("Łukasz", "Żółć")
    text = _large_text()
    msg = make_message(account.address, "Duży załącznik", text)
    orphan = spool_dir(settings.var_dir) / ("0" * 32 + ".msg")
    local_stack.stop_service("dovecot")  # the message waits in the queue
    try:
        svc = await start_service(settings)
        try:
            assert await smtp_send(svc.smtp_port, [account.address], msg) == {}
            [name] = _spool_files(settings)
            async with svc.engine.connect() as conn:
                row = (await conn.execute(select(messages.c.body, messages.c.size))).one()
            # The database holds the head only; the size counts the whole message.
            assert len(row.body) < 4096 and row.size > len(text.encode())
            assert b"\r\nSubject: " in row.body and row.body.endswith(
                b"8bit\r\nMIME-Version: 1.0\r\n\r\n"
            )
        finally:
            await svc.stop()
        # A file no message names, left long ago (a crash mid-session): removed at start.
        orphan.write_bytes(b"left over\r\n")
        old = time.time() - 3600
        os.utime(orphan, (old, old))
        svc = await start_service(settings)
    finally:
        local_stack.start_service("dovecot")
    try:
        assert _spool_files(settings) == [name]  # the queued message's file was kept
        inbox = await wait_for_inbox(settings, account.address, account.password, within=30)
        assert len(inbox) == 1
        got = message_from_bytes(inbox[0], policy=policy.default)
        assert isinstance(got, EmailMessage)
        body = got.get_body()
        assert body is not None and body.get_content().replace("\r\n", "\n") == text
        rows = await wait_for_deliveries(svc.queue, {"delivered"})
        assert [r.status for r in rows] == ["delivered"]
        for _ in range(100):
            if not _spool_files(settings):
                break
            await asyncio.sleep(0.05)
        assert _spool_files(settings) == []
    finally:
        await svc.stop()


_CLIENT = textwrap.dedent(
    """
    import smtplib, sys
    from email.message import EmailMessage
    port, rcpt, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    msg = EmailMessage()
    msg["From"] = "jan@example.org"
    msg["To"] = rcpt
    msg["Subject"] = "20 MB"
    msg.set_content("wniosek\\n")
    msg.add_attachment(bytes(range(256)) * (size // 256), maintype="application",
                       subtype="octet-stream", filename="skan.bin")
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        client.ehlo("resident.example.org")
        refused = client.send_message(msg, "jan@example.org", [rcpt])
    print("sent", len(refused))
    """
)


async def test_memory_of_a_session_stays_small_for_a_15_mb_message(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Anna", "Nowak")
    size = 15 * 1024 * 1024  # 20 MB and more once base64-encoded, under the 25 MB limit
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        # A real client in its own process, so that only the server's memory is traced here.
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CLIENT,
            str(service.smtp_port),
            account.address,
            str(size),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(client.communicate(), 120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert client.returncode == 0 and out.strip() == b"sent 0"
    growth = peak - base
    # Without the spool the body alone is held two or three times over (> 40 MB).
    assert growth < 6 * 1024 * 1024, f"peak grew by {growth / 2**20:.1f} MiB"
    rows = await wait_for_deliveries(service.queue, {"delivered"}, within=60)
    assert [r.status for r in rows] == ["delivered"]
    inbox = await wait_for_inbox(settings, account.address, account.password)
    got = message_from_bytes(inbox[0], policy=policy.default)
    assert isinstance(got, EmailMessage)
    [attachment] = list(got.iter_attachments())
    assert attachment.get_content() == bytes(range(256)) * (size // 256)
