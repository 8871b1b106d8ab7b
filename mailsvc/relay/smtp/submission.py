"""Submission (councillors → anyone): STARTTLS, AUTH PLAIN/LOGIN against the directory, and
sending only as one's own address or a group one belongs to."""

from __future__ import annotations

import asyncio
import binascii
import logging
import ssl
import time
import weakref
from base64 import b64decode
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import formatdate, make_msgid
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession

from mailsvc.config import Settings
from mailsvc.domain.header_addresses import header_addresses
from mailsvc.domain.relay import LocalRecipient, classify_recipient
from mailsvc.errors import StorageUnavailable
from mailsvc.receipts.sink import ReportSink
from mailsvc.relay.counters import AUTH_FAILURES, Counters
from mailsvc.relay.smtp import replies
from mailsvc.relay.smtp.inbound import (
    _clean,
    _peer_ip,
    _tls_details,
    message_ids,
    refuse_nul_header,
    smtp_factory,
)
from mailsvc.relay.smtp.reports import accept_reports
from mailsvc.relay.smtp.server import AdvertisesExtensions
from mailsvc.storage.guard import (
    PasswordGuard,
    SendLimits,
    at_least,
    guard_keys,
    password_guard,
)
from mailsvc.storage.queue import ORIGIN_SUBMISSION, MailQueue
from mailsvc.storage.relaylog import RelayLog
from provisioning.directory import Directory
from provisioning.errors import DirectoryError, DirectoryUnavailable

log = logging.getLogger(__name__)

# A refused AUTH answers after at least this long, whatever made it fail.
FAILED_AUTH_SECONDS = 0.5
_HEADER_MAX = 256 * 1024


class SubmissionHandler(AdvertisesExtensions):
    """aiosmtpd handler for the submission port."""

    def __init__(
        self,
        settings: Settings,
        directory: Directory,
        queue: MailQueue,
        relay_log: RelayLog | None = None,
        on_queued: Any = lambda: None,
        reports: ReportSink | None = None,
        guard: PasswordGuard | None = None,
        limits: SendLimits | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.settings = settings
        # Sessions, refusals and failed AUTHs of this server, for /metrics.
        self.counters = counters
        self.directory = directory
        self.queue = queue
        self.relay_log = relay_log
        self.on_queued = on_queued
        # Read receipts (MDNs) councillors' mail programs send for distribution messages.
        self.reports = reports
        # Password checks and sending volumes, counted in the database (every process).
        self.guard = guard or password_guard(settings, queue.units)
        sub = settings.submission
        self.limits = limits or SendLimits(
            queue.units, sub.messages_per_hour, sub.recipients_per_hour
        )
        # Failed AUTH commands per connection (the session object lives as long as it).
        self._failures: weakref.WeakKeyDictionary[SmtpSession, int] = weakref.WeakKeyDictionary()

    # -- AUTH (async, so the directory bind never blocks the loop) ---------------------------

    async def _too_many_failures(self, server: SMTP) -> bool:
        """After ``submission.max_auth_failures`` failed AUTHs the next one ends the
        connection with 421 (a password guesser gets a few tries per connection, not 60)."""
        session = server.session
        if (
            session is None
            or self._failures.get(session, 0) < self.settings.submission.max_auth_failures
        ):
            return False
        log.warning("AUTH: too many failures on one connection from %s", _peer_ip(session))
        self._count_failure("connection_limit")
        await server.push(replies.S421_AUTH_FAILURES)
        if server.transport is not None:
            server.transport.close()
        return True

    def _count_failure(self, reason: str) -> None:
        if self.counters is not None:
            self.counters.inc(AUTH_FAILURES, reason)

    def _failed(self, server: SMTP) -> None:
        if server.session is not None:
            self._failures[server.session] = self._failures.get(server.session, 0) + 1

    async def _verify(self, server: SMTP, login: bytes, password: bytes) -> AuthResult:
        address = login.decode("utf-8", "replace").strip().lower()
        peer = _peer_ip(server.session) if server.session else "?"
        keys = guard_keys(peer, address)
        try:
            wait = await self.guard.reserve(keys)
        except StorageUnavailable:
            await server.push(replies.S454_AUTH_TEMP)
            return AuthResult(success=False, handled=True)
        if wait > 0:
            self._failed(server)
            self._count_failure("throttled")
            log.info("AUTH for %s from %s: waiting %.0f s after failures", address, peer, wait)
            await server.push(replies.S454_AUTH_WAIT.format(seconds=int(wait) + 1))
            return AuthResult(success=False, handled=True)
        started = time.monotonic()
        try:
            entry = await self.directory.authenticate(address, password.decode("utf-8", "replace"))
        except (DirectoryUnavailable, DirectoryError) as exc:
            log.warning("AUTH for %s: directory unavailable: %s", address, exc)
            await self.guard.release(keys)
            await server.push(replies.S454_AUTH_TEMP)
            return AuthResult(success=False, handled=True)
        if entry is None:
            self._failed(server)
            self._count_failure("invalid_credentials")
            log.info("AUTH failed for %s from %s", address, peer)
            # An unknown account and a wrong password: the same reply after the same time.
            await at_least(started, FAILED_AUTH_SECONDS)
            return AuthResult(success=False, handled=False, message=replies.S535_INVALID)
        await self.guard.succeeded(keys)
        return AuthResult(
            success=True,
            message=replies.S235_OK,
            auth_data=LoginPassword(entry.address.encode(), b""),
        )

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if await self._too_many_failures(server):
            return AuthResult(success=False, handled=True)
        if len(args) == 1:
            raw = await server.challenge_auth("")
            if not isinstance(raw, bytes):
                return AuthResult(success=False)
        else:
            try:
                raw = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push(replies.S501_BASE64)
                return AuthResult(success=False, handled=True)
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            await server.push(replies.S501_BASE64)
            return AuthResult(success=False, handled=True)
        return await self._verify(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if await self._too_many_failures(server):
            return AuthResult(success=False, handled=True)
        if len(args) == 1:
            login = await server.challenge_auth("Username:")
            if not isinstance(login, bytes):
                return AuthResult(success=False)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push(replies.S501_BASE64)
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if not isinstance(password, bytes):
            return AuthResult(success=False)
        return await self._verify(server, login, password)

    # -- envelope ---------------------------------------------------------------------------

    @staticmethod
    def _login(session: SmtpSession) -> str | None:
        data: Any = session.auth_data
        if not session.authenticated or data is None:
            return None
        return bytes(data.login).decode()

    async def handle_MAIL(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        login = self._login(session)
        if login is None:
            return replies.S530_AUTH_REQUIRED
        sender = address.strip().lower()
        try:
            allowed = sender == login or await self._member_of(login, sender)
        except (DirectoryUnavailable, DirectoryError) as exc:
            # Not knowing whether the councillor is in the group is not a refusal: try later.
            log.warning("MAIL FROM <%s> by %s: directory unavailable: %s", sender, login, exc)
            return replies.S451_DIRECTORY
        if not allowed:
            return replies.S553_SENDER_NOT_OWNED.format(address=_clean(address, 254))
        envelope.mail_from = sender
        envelope.mail_options.extend(mail_options)
        return replies.S250_MAIL_OK

    async def _member_of(self, login: str, group_address: str) -> bool:
        decision = classify_recipient(group_address, (self.settings.domain,))
        if not isinstance(decision, LocalRecipient):
            return False
        members = await self.directory.expand_group(decision.local_part)
        return bool(members) and any(m.address == login for m in members or [])

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._login(session) is None:
            return replies.S530_AUTH_REQUIRED
        if len(envelope.rcpt_tos) >= self.settings.smtp.max_recipients:
            return replies.S452_TOO_MANY_RCPT
        rcpt = address.strip()
        local, at, domain = rcpt.rpartition("@")
        if not at or not local or "." not in domain or any(ord(c) < 33 for c in rcpt):
            return replies.S553_BAD_SYNTAX.format(address=_clean(rcpt, 254))
        if self.reports is not None and self.reports.is_report_address(rcpt):
            if self.reports.recipient_id(rcpt) is None:
                log.warning(
                    "RCPT <%s> from %s: forged report token", _clean(rcpt), self._login(session)
                )
                return replies.S550_UNKNOWN.format(address=_clean(rcpt, 254))
            envelope.rcpt_tos.append(rcpt)
            return replies.S250_RCPT_OK
        if domain.lower() == self.settings.domain:
            decision = classify_recipient(rcpt, (self.settings.domain,))
            if not isinstance(decision, LocalRecipient):
                return replies.refusal_reply(decision.kind, rcpt, self.settings.office_address)
            try:
                entry = await self.directory.find_by_address(decision.address)
                members = None if entry else await self.directory.expand_group(decision.local_part)
            except (DirectoryUnavailable, DirectoryError):
                return replies.S451_DIRECTORY
            if entry is None and not members:
                return replies.S550_UNKNOWN.format(address=decision.address)
            targets = [entry.address] if entry else [m.address for m in members or []]
            for target in targets:
                if target not in envelope.rcpt_tos:
                    envelope.rcpt_tos.append(target)
            return replies.S250_RCPT_OK
        envelope.rcpt_tos.append(rcpt)
        return replies.S250_RCPT_OK

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        login = self._login(session)
        if login is None:
            return replies.S530_AUTH_REQUIRED
        content = envelope.original_content or b""
        refused = refuse_nul_header(content, login, _peer_ip(session))
        if refused is not None:
            return refused
        if self.reports is not None:
            reply = await accept_reports(self.reports, envelope, content)
            if reply is not None:
                return reply
        header = _header(content)
        authors = [("From", a) for a in _addresses(header, "From")]
        authors += [("Sender", a) for a in _addresses(header, "Sender")]
        if not any(field == "From" for field, _ in authors):
            return replies.S550_NO_FROM
        try:
            for field, author in authors:
                if author != login and not await self._member_of(login, author):
                    log.warning("DATA by %s: %s <%s> refused", login, field, _clean(author))
                    return replies.S553_FROM_NOT_OWNED.format(
                        field=field, address=_clean(author, 254)
                    )
        except (DirectoryUnavailable, DirectoryError):
            return replies.S451_DIRECTORY
        try:
            if not await self.limits.take(login, len(envelope.rcpt_tos)):
                log.warning("DATA by %s: hourly sending limit reached", login)
                return replies.S451_SEND_LIMIT
        except StorageUnavailable:
            return replies.S451_STORAGE
        # RFC 6409 section 8.2/8.3: a submission server may add what the client left out.
        added = b""
        if header.get("Date") is None:
            added += f"Date: {formatdate(localtime=True)}\r\n".encode()
        if header.get("Message-ID") is None:
            added += f"Message-ID: {make_msgid(domain=self.settings.domain)}\r\n".encode()
        tls = _tls_details(session)
        received = (
            f"Received: from {_clean(session.host_name or 'unknown')} ([{_peer_ip(session)}])\r\n"
            + (f"\t({tls})\r\n" if tls else "")
            + f"\t(authenticated sender: {login})\r\n"
            + f"\tby {self.settings.smtp_hostname} (mailsvc) with ESMTPSA"
            + f"; {formatdate(localtime=False, usegmt=True)}\r\n"
        ).encode()
        body = received + added + content
        try:
            queue_id = await self.queue.enqueue(
                envelope.mail_from or login,
                list(envelope.rcpt_tos),
                body,
                client=_peer_ip(session),
                origin=ORIGIN_SUBMISSION,
            )
        except StorageUnavailable:
            return replies.S451_STORAGE
        self.on_queued()
        if self.relay_log is not None:
            answered = _answered_ids(header)
            if answered:
                await self.relay_log.record_reply(login, answered)
        log.info("submitted %s by %s to %d recipients", queue_id, login, len(envelope.rcpt_tos))
        return replies.S250_QUEUED.format(queue_id=queue_id)


def _header(content: bytes) -> Message:
    head = content.split(b"\r\n\r\n", 1)[0][:_HEADER_MAX]
    return BytesHeaderParser(policy=compat32).parsebytes(head)


def _addresses(header: Message, name: str) -> list[str]:
    """The addresses of every ``name`` field (lower case); a field that names none gives ""."""
    values = [str(v) for v in header.get_all(name, [])]
    pairs = header_addresses(values) or []  # unreadable (None): names none, refused
    found = [a.strip().lower() for _, a in pairs]
    return found or ([""] if values else [])


def _answered_ids(msg: Message) -> list[str]:
    ids: list[str] = []
    for name in ("In-Reply-To", "References"):
        for value in msg.get_all(name, []):
            ids.extend(message_ids(str(value)))
    return ids


async def start_submission(
    settings: Settings, handler: SubmissionHandler, tls: ssl.SSLContext
) -> asyncio.Server:
    """Port 587 (``submission.port``): STARTTLS, then AUTH."""
    loop = asyncio.get_running_loop()
    factory = smtp_factory(
        settings,
        handler,
        tls=tls,
        counters=handler.counters,
        server_name="submission",
        auth_required=False,  # checked per command, so the reply says what is missing
        auth_require_tls=not settings.submission.allow_plaintext_auth,
    )
    return await loop.create_server(
        factory, host=settings.submission.host, port=settings.submission.port, reuse_address=True
    )


# Seconds a client has to finish the TLS handshake on the implicit-TLS port.
HANDSHAKE_SECONDS = 30.0


async def start_submission_tls(
    settings: Settings, handler: SubmissionHandler, tls: ssl.SSLContext
) -> asyncio.Server:
    """Port 465 (``submission.tls_port``, RFC 8314): TLS from the first byte, then the same
    service as on 587, with its own connection limits of the same size."""
    loop = asyncio.get_running_loop()
    factory = smtp_factory(
        settings,
        handler,
        tls=None,  # already TLS: no STARTTLS on top
        auth_required=False,
        auth_require_tls=False,  # every byte on this socket is inside TLS
    )
    return await loop.create_server(
        factory,
        host=settings.submission.host,
        port=settings.submission.tls_port,
        ssl=tls,
        ssl_handshake_timeout=HANDSHAKE_SECONDS,
        reuse_address=True,
    )
