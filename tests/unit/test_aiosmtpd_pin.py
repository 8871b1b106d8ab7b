"""Upstream code that mailsvc overrides or reaches into is pinned, and this test notices change.

mailsvc/relay/smtp/server.py overrides aiosmtpd's private internals (its DATA reader, connection
set-up, address parser) and writes to asyncio's StreamReader buffer directly; mailsvc/mailbox.py
puts a feed in front of aioimaplib's response parser and sends STARTTLS through its protocol;
mailsvc/storage/sqlite_fast.py wraps driver errors with SQLAlchemy's internal
``DBAPIError.instance``. Each such library is pinned to one
version in pyproject.toml (Python itself for asyncio), and the source of every upstream
function, method or class involved is recorded here as a SHA-256 of ``inspect.getsource``.

When this fails after an upgrade: read the upstream change in each function named, review our code
named beside it against the new upstream code (and its tests), then record the new hash (the
failure prints it) here and the new version in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SERVER = "mailsvc/relay/smtp/server.py"
# Libraries whose internals we override or use, pinned exactly in pyproject.toml.
PINNED = ("aiosmtpd", "aioimaplib", "SQLAlchemy")


@dataclass(frozen=True)
class Upstream:
    target: str  # "module:Qualified.name"
    sha256: str
    ours: str  # where our code overrides or depends on it: what to review


UPSTREAM = [
    # -- aiosmtpd: overridden by CouncilSMTP ---------------------------------------------------
    Upstream(
        "aiosmtpd.smtp:SMTP.__init__",
        "8a9ca80f23ad9bf273e58e284170e9f919dc6269b280ca0624ac0603a8ad3604",
        f"{SERVER} CouncilSMTP.__init__ and _init_from: they record the state __init__ leaves"
        " and copy it to later connections (a new per-connection attribute would be shared)",
    ),
    Upstream(
        "aiosmtpd.smtp:_AuthMechAttr",
        "f0918a59ff9135dd49523376781ed09d947a2380be7cbc37727fa4c3090dc132",
        f"{SERVER} CouncilSMTP._init_from: rebuilds _auth_methods entries",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP._handle_client",
        "0e4d096403af6c74c87b2fe722c213884e2140a9388e95feb05aec2f39e05556",
        f"{SERVER} CouncilSMTP._init_from (commands are dispatched through _smtp_methods),"
        " _REWRITES and _BOGUS_GOODBYE (its error texts)",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP._cb_client_connected",
        "a73e95bb7f362ab9dbd9f0a4f310c203c525c0c98682dede6f98af4c97d15ad4",
        f"{SERVER} CouncilSMTP._init_from",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP._getaddr",
        "0aeb21c56ac1260e784e430a340459c83c23640a85965e7b8de3e1ada74d85f5",
        f"{SERVER} CouncilSMTP._getaddr (its fast path must give what this gives)",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.smtp_MAIL",
        "80dd938e7791acfb31bc6eef174b9c1af96d7bac54fe103198ec6ce3440e8043",
        f"{SERVER} CouncilSMTP._getaddr (called from here) and _REWRITES",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.smtp_RCPT",
        "a0d6605883c0e608df4fe4376f284be97e36a9b257d6401dd0116ec972c3e0ea",
        f"{SERVER} CouncilSMTP._getaddr (called from here)",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.smtp_EHLO",
        "1d91592dd954c4cd87bf365fc57f0a16e36d9ff911cda1b2b253a4981618f19f",
        f"{SERVER} AdvertisesExtensions.handle_EHLO (inserts before the last reply line)",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.connection_made",
        "77a45df5065bba343a040b6f6c88de8907b40c80bc03727e7f18ede20d19f4bf",
        f"{SERVER} CouncilSMTP.connection_made (reads _original_transport)",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.connection_lost",
        "d3bf6349bc3c25c1da222896000a041fae278d177036ffaea0cabc4cb9bc655b",
        f"{SERVER} CouncilSMTP.connection_lost",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.eof_received",
        "baab5aaf93160933b410f604e52d356f04b1c67af3666ab70ff3236499f9fbfb",
        f"{SERVER} CouncilSMTP.eof_received",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.push",
        "15f4f1de5e30c337e3df529f7b5794d3dd071f6c32ddf53bf21248c6e2277c48",
        f"{SERVER} CouncilSMTP.push",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.smtp_DATA",
        "3a33f30d3fd6d02f39c7d78a08288bffea9170525b62e2161568041ae7e018df",
        f"{SERVER} CouncilSMTP.smtp_DATA, _read_body and _BodyScan (the same replies and"
        " content for every input: tests/unit/test_smtp_data.py)",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.check_helo_needed",
        "9829bb73251c983eef39d54df95b7d7a177c054e315fecfa0602fa74f9eee8c4",
        f"{SERVER} CouncilSMTP.smtp_DATA",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.check_auth_needed",
        "812bbc794078b1b0a6171a54910fab7fec3f3dff963fb3be933612ba775cd1ee",
        f"{SERVER} CouncilSMTP.smtp_DATA",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP._call_handler_hook",
        "6ff23a6634ea03076444ef30df9fd65b01c4d52e9fda0bd3d99339aacc488d74",
        f"{SERVER} CouncilSMTP.smtp_DATA",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP.handle_exception",
        "33be80d97d2d75ee2ad40cbf08ee45d49d1ab9f4b2ad1fb3b5c597dc8d735f22",
        f"{SERVER} CouncilSMTP.handle_exception (451 instead of its 500 with the error's text)",
    ),
    Upstream(
        "aiosmtpd.smtp:SMTP._set_post_data_state",
        "1dc8a8abca2a81644a605b8ebf427fc7472eeadf5149dd3cf2591fa86b2256e9",
        f"{SERVER} CouncilSMTP.smtp_DATA",
    ),
    # -- asyncio (Python): StreamReader internals used by CouncilSMTP ----------------------------
    Upstream(
        "asyncio.streams:StreamReader.__init__",
        "3165c2779b9587f1876d1f1fe4bb1f0b5f2e9afbf2c911b5525d3952ed11dd49",
        f"{SERVER} CouncilSMTP.data_received and _read_body (_buffer, _eof, _limit)",
    ),
    Upstream(
        "asyncio.streams:StreamReader.feed_data",
        "f1dc194f7bceb07d20affc4eab925f481de4bb6ce043cbb50cfd65bf3a091210",
        f"{SERVER} CouncilSMTP.data_received (adds to _buffer without it)",
    ),
    Upstream(
        "asyncio.streams:StreamReader.readuntil",
        "81e08fef17901a0e137eb90bc8fc0d552d39d87b84b2b6cc3bc76ebee8f0e89d",
        f"{SERVER} CouncilSMTP._read_body (LimitOverrunError.consumed)",
    ),
    Upstream(
        "asyncio.streams:StreamReader.read",
        "54bc5378c6eec10bf1b7f0c8d0017d6c03878a89c56da163af242f75c4573dfa",
        f"{SERVER} CouncilSMTP._read_body",
    ),
    Upstream(
        "asyncio.streams:StreamReaderProtocol.__init__",
        "95b779e3bd047ee6a49ee7e501b482024e999e8644bca3247ca8fab4e6c625e0",
        f"{SERVER} CouncilSMTP._init_from and _protocol_attributes",
    ),
    Upstream(
        "asyncio.streams:StreamReaderProtocol.data_received",
        "e57e2bc9772342e51fb9e35a145e835c62946d01ea0305e116e6f790778e212e",
        f"{SERVER} CouncilSMTP.data_received",
    ),
    # -- aioimaplib: the feed in front of its parser -------------------------------------------
    Upstream(
        "aioimaplib.aioimaplib:IMAP4.create_client",
        "4c6284d94662f22860f532f6539a08cc69efb130c3de100313d9bc9bd3039c4e",
        "mailsvc/mailbox.py MailboxSession.__init__ (replaces protocol.data_received before"
        " the connection is made)",
    ),
    Upstream(
        "aioimaplib.aioimaplib:IMAP4ClientProtocol.data_received",
        "f4e4f02478babbeb58d8b358efd9e329925be1152c824ade4af24ae2e459f135",
        "mailsvc/mailbox.py _Feed (wraps it)",
    ),
    Upstream(
        "aioimaplib.aioimaplib:IMAP4ClientProtocol._handle_responses",
        "b85f6640b4ca5fe68483cf9c7ab007e5b4b1d5534718654e60d0894fefafc707",
        "mailsvc/mailbox.py _Feed (hands it a line or literal at a time: it recurses per line)",
    ),
    Upstream(
        "aioimaplib.aioimaplib:IMAP4ClientProtocol._untagged_response",
        "293b7da830751ce589735eaa11aa38369f9d5513454a79125a908eeb18737644",
        "mailsvc/mailbox.py _Feed.listed and MailboxSession.folders (it drops every '* ')",
    ),
    # -- aioimaplib: STARTTLS, which it lists but does not implement ---------------------------
    Upstream(
        "aioimaplib.aioimaplib:IMAP4ClientProtocol.execute",
        "aa73299f4fb0f8528bfc112d1d67a09dc6017f869d44de9ddd433552274a0230",
        "mailsvc/mailbox.py MailboxSession._start_tls (sends STARTTLS through it, then swaps"
        " protocol.transport for the TLS one)",
    ),
    Upstream(
        "aioimaplib.aioimaplib:IMAP4ClientProtocol.capability",
        "9dc627445079f6044feed6371bb4816b09eb639831182ee761264c4d1a1487b5",
        "mailsvc/mailbox.py MailboxSession._start_tls (reads protocol.capabilities before"
        " STARTTLS and asks again after it)",
    ),
    # -- SQLAlchemy: raising driver errors as it does ------------------------------------------
    Upstream(
        "sqlalchemy.exc:DBAPIError.instance",
        "8058b7ea5c2c58801dafa066e14a780f0551d1e004a27f8ca53699b1b9a89147",
        "mailsvc/storage/sqlite_fast.py as_dbapi_error",
    ),
]


def _resolve(target: str) -> object:
    module, _, qualname = target.partition(":")
    obj: object = importlib.import_module(module)
    for name in qualname.split("."):
        obj = getattr(obj, name)
    return obj


def _pinned_versions() -> dict[str, str]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins: dict[str, str] = {}
    for requirement in dependencies:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;,\s]+)", requirement)
        if found:
            pins[found[1].lower()] = found[2]
    return pins


@pytest.mark.parametrize("distribution", PINNED)
def test_the_installed_version_is_the_pinned_one(distribution: str) -> None:
    pinned = _pinned_versions().get(distribution.lower())
    assert pinned is not None, f"pyproject.toml must pin {distribution} with '=='"
    installed = metadata.version(distribution)
    assert installed == pinned, (
        f"{distribution} {installed} is installed, but pyproject.toml pins {pinned}: install the"
        f" pinned version, or review the overrides listed in {__file__} and move the pin"
    )


@pytest.mark.parametrize("upstream", UPSTREAM, ids=lambda u: u.target)
def test_overridden_upstream_code_is_the_reviewed_code(upstream: Upstream) -> None:
    source = inspect.getsource(_resolve(upstream.target))  # type: ignore[arg-type]
    digest = hashlib.sha256(source.encode()).hexdigest()
    module = upstream.target.split(".")[0]
    version = (
        f"Python {sys.version.split()[0]}" if module == "asyncio" else metadata.version(module)
    )
    assert digest == upstream.sha256, (
        f"{upstream.target} changed upstream ({version}; sha256 now {digest}). Review"
        f" {upstream.ours} against the new code, then record the new hash in {__file__}."
    )
