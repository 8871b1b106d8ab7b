"""DSN parameters (RFC 3461) from the smarthost client, seen by the capture server (aiosmtpd, in
this test's loop) as it received them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest

from mailsvc.relay.delivery import capture
from mailsvc.relay.delivery.smarthost import SmarthostClient, xtext

BODY = b"From: a@rada.example\r\nTo: b@urzad.example\r\nSubject: s\r\n\r\nbody\r\n"
SENDER = "bounces+Zm9v@rada.example"


@dataclass(frozen=True)
class Capture:
    address: tuple[str, int]
    directory: Path

    def only_message(self) -> capture.CapturedMessage:
        (found,) = capture.list_captured(self.directory)
        return found


async def started(directory: Path, *, dsn: bool) -> AsyncIterator[Capture]:
    sink = capture.CaptureSink(directory, "smarthost.test", dsn=dsn)
    address = await sink.start()
    try:
        yield Capture(address, directory)
    finally:
        await sink.stop()


@pytest.fixture
async def dsn_capture(tmp_path: Path) -> AsyncIterator[Capture]:
    async for sink in started(tmp_path, dsn=True):
        yield sink


@pytest.fixture
async def plain_capture(tmp_path: Path) -> AsyncIterator[Capture]:
    async for sink in started(tmp_path, dsn=False):
        yield sink


async def send(sink: Capture, recipients: list[str], envid: str | None) -> capture.CapturedMessage:
    client = SmarthostClient(*sink.address, helo="rada.example", timeout=10)
    try:
        replies = await client.deliver(SENDER, recipients, BODY, dsn_envid=envid)
    finally:
        await client.close()
    assert {r: reply.code for r, reply in replies.items()} == dict.fromkeys(recipients, 250)
    return sink.only_message()


def smtp_to(sink: Capture) -> aiosmtplib.SMTP:
    host, port = sink.address
    return aiosmtplib.SMTP(hostname=host, port=port, local_hostname="rada.example")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("4f1c2a9b0d3e5f67", "4f1c2a9b0d3e5f67"),
        ("a+b=c@urzad.example", "a+2Bb+3Dc@urzad.example"),
        ("two words", "two+20words"),
        ("żółw", "+C5+BC+C3+B3+C5+82w"),
        ("<id@x>", "<id@x>"),
    ],
)
def test_xtext(value: str, encoded: str) -> None:
    assert xtext(value) == encoded


async def test_a_tracked_message_asks_a_dsn_capable_smarthost_for_both_reports(
    dsn_capture: Capture,
) -> None:
    found = await send(dsn_capture, ["burmistrz@urzad.example", "a+b@urzad.example"], "4f1c2a9b")

    assert found.mail_from == SENDER
    assert found.mail_params == ("RET=HDRS", "ENVID=4f1c2a9b")
    assert found.recipients == ("burmistrz@urzad.example", "a+b@urzad.example")
    assert found.rcpt_params == (
        ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;burmistrz@urzad.example"),
        ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+2Bb@urzad.example"),
    )
    assert found.message == BODY


async def test_an_address_that_needs_smtputf8_gets_notify_without_orcpt(
    dsn_capture: Capture,
) -> None:
    found = await send(dsn_capture, ["łukasz@urząd.example"], "4f1c2a9b")

    assert found.mail_params == ("SMTPUTF8", "RET=HDRS", "ENVID=4f1c2a9b")
    assert found.rcpt_params == (("NOTIFY=SUCCESS,FAILURE",),)


async def test_untracked_mail_asks_for_nothing_even_where_dsn_is_offered(
    dsn_capture: Capture,
) -> None:
    found = await send(dsn_capture, ["jan@example.org"], None)

    assert found.mail_params == ()
    assert found.rcpt_params == ((),)


async def test_a_smarthost_without_dsn_gets_the_message_as_before(
    plain_capture: Capture,
) -> None:
    found = await send(plain_capture, ["burmistrz@urzad.example"], "4f1c2a9b")

    assert found.mail_params == ()
    assert found.rcpt_params == ((),)
    assert found.message == BODY


async def test_the_capture_without_dsn_refuses_dsn_parameters(
    plain_capture: Capture,
) -> None:
    # What a client that sent them regardless would get: the message would not leave.
    async with smtp_to(plain_capture) as smtp:
        assert not smtp.supports_extension("dsn")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.mail(SENDER, options=["RET=HDRS"])
        assert refused.value.code == 555


async def test_the_capture_offering_dsn_says_so(dsn_capture: Capture) -> None:
    async with smtp_to(dsn_capture) as smtp:
        assert smtp.supports_extension("dsn")
        assert smtp.supports_extension("8bitmime") and smtp.supports_extension("smtputf8")


def test_capture_file_keeps_the_parameters_as_written(tmp_path: Path) -> None:
    path = capture.store(
        tmp_path,
        SENDER,
        ["a@x.example", "b@x.example"],
        BODY,
        mail_params=["RET=HDRS", "ENVID=Ab+2B"],
        rcpt_params=[["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a@x.example"], []],
    )

    found = capture.read(path)
    assert found.mail_from == SENDER and found.recipients == ("a@x.example", "b@x.example")
    assert found.mail_params == ("RET=HDRS", "ENVID=Ab+2B")
    assert found.rcpt_params == (("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a@x.example"), ())
    assert found.message == BODY
    head = path.read_bytes().split(b"\r\n")
    assert head[0] == f"X-Capture-Envelope-From: <{SENDER}> RET=HDRS ENVID=Ab+2B".encode()
    assert head[2] == b"X-Capture-Envelope-To: <b@x.example>"
