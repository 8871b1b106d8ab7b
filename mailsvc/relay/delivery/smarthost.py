"""SMTP client for the smarthost route (aiosmtplib): one transaction per message.

Results are per recipient, as with LMTP: the MAIL reply applies to every recipient, each RCPT
reply to its own, and the final DATA reply to every accepted recipient. A connection that cannot
be made or breaks before the final reply raises :class:`SmarthostUnavailable`; the worker defers
every recipient of the message then.

Mail leaves the service here and nowhere else, so this is where it is DKIM-signed
(``mailsvc.relay.dkim``): acknowledgements, DSNs, reminders, distribution copies to outside
addresses and councillors' submitted mail alike. A body with parts on disk is hashed from its
files, and the signature fields are joined to the one buffer the client sends.

A message whose receipts are tracked (``dsn_envid``) asks a smarthost that offers DSN (RFC 3461)
for a report on success and on failure: the smarthost's 250 only says it took the message, and
the success report from the remote end is what proves delivery there.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

import aiosmtplib

from mailsvc.domain.outcome import Reply
from mailsvc.errors import TemporaryFailure
from mailsvc.relay.delivery.body import PartedBody
from mailsvc.relay.dkim import DkimSigner

log = logging.getLogger(__name__)

SECURITY_NONE = "none"
SECURITY_STARTTLS = "starttls"
SECURITY_TLS = "tls"
# Reply given to a recipient whose address needs SMTPUTF8 when the server does not offer it.
_NO_SMTPUTF8 = Reply(553, "5.6.7 The smarthost does not support SMTPUTF8 addresses")
# What a tracked message asks for: headers only in a report (the copy carries documents), and a
# report for success as well as failure.
DSN_RET = "RET=HDRS"
DSN_NOTIFY = "NOTIFY=SUCCESS,FAILURE"


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except "+" and "=" as is, every other byte as +XX."""
    return "".join(
        chr(b) if 33 <= b <= 126 and b not in (0x2B, 0x3D) else f"+{b:02X}"
        for b in value.encode("utf-8")
    )


def dsn_mail_options(envid: str) -> list[str]:
    return [DSN_RET, f"ENVID={xtext(envid)}"]


def dsn_rcpt_options(recipient: str) -> list[str]:
    """NOTIFY, and ORCPT for an ASCII address (ORCPT is optional; an address that needs
    SMTPUTF8 would need RFC 6533's utf-8 type, which smarthosts seldom read)."""
    if recipient.isascii():
        return [DSN_NOTIFY, f"ORCPT=rfc822;{xtext(recipient)}"]
    return [DSN_NOTIFY]


class SmarthostUnavailable(TemporaryFailure, ConnectionError):
    """The smarthost cannot be reached or broke the conversation; retry later."""


def _reply(exc: aiosmtplib.SMTPResponseException) -> Reply:
    return Reply(exc.code, " ".join(exc.message.split()) or "(no text)")


class SmarthostClient:
    """One connection to the smarthost, opened on first use and kept for the next message."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str = SECURITY_NONE,
        username: str = "",
        password: str = "",
        helo: str = "mailsvc",
        timeout: float = 60.0,
        tls_context: ssl.SSLContext | None = None,
        signer: DkimSigner | None = None,
    ) -> None:
        if security not in (SECURITY_NONE, SECURITY_STARTTLS, SECURITY_TLS):
            raise ValueError(f"smarthost security {security!r}: expected none, starttls or tls")
        self.host, self.port, self.security = host, port, security
        self._username, self._password = username, password
        self.helo, self.timeout = helo, timeout
        self._tls_context = tls_context
        self.signer = signer
        self._smtp: aiosmtplib.SMTP | None = None

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    def _where(self) -> str:
        return f"smarthost {self.host}:{self.port}"

    async def connect(self) -> None:
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.helo,
            timeout=self.timeout,
            use_tls=self.security == SECURITY_TLS,
            start_tls=self.security == SECURITY_STARTTLS,
            tls_context=self._tls_context,
            username=self._username or None,
            password=self._password or None,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            # Wrong credentials are a configuration problem: keep the mail and say so.
            raise SmarthostUnavailable(f"{self._where()} refused AUTH: {_reply(exc)}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            raise SmarthostUnavailable(f"{self._where()} unreachable: {exc}") from exc
        self._smtp = smtp

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.quit(timeout=2)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()

    async def deliver(
        self,
        mail_from: str,
        recipients: Sequence[str],
        body: bytes | PartedBody,
        *,
        dsn_envid: str | None = None,
    ) -> dict[str, Reply]:
        """Send ``body``; returns the final reply for each recipient.

        With ``dsn_envid``, a smarthost that offers DSN is asked for success and failure reports
        under that envelope id; one that does not gets the message as any other.

        A body with parts on disk is put together first (the SMTP client sends one buffer),
        after the DKIM signatures when there is a signer and the message is ours to sign.

        A connection kept from an earlier message may have been closed by the server while
        idle: that shows at MAIL, and the transaction is then tried once on a new connection.
        """
        signatures = await self._sign(body)
        if isinstance(body, PartedBody):
            body = await body.to_bytes(prefix=signatures)
        elif signatures:
            body = signatures + body
        reused = self.connected
        if not reused:
            await self.connect()
        try:
            return await self._transaction(mail_from, recipients, body, dsn_envid)
        except _StaleConnection as exc:
            await self.close()
            if not reused:
                raise SmarthostUnavailable(f"{self._where()} closed the connection") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise SmarthostUnavailable(f"{self._where()} failed: {exc!r}") from exc
        await self.connect()
        try:
            return await self._transaction(mail_from, recipients, body, dsn_envid)
        except (_StaleConnection, aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise SmarthostUnavailable(f"{self._where()} failed: {exc!r}") from exc

    async def _sign(self, body: bytes | PartedBody) -> bytes:
        if self.signer is None:
            return b""
        message = body.text_chunks() if isinstance(body, PartedBody) else body
        try:
            return await asyncio.to_thread(self.signer.sign, message)
        except OSError:
            raise  # a part file gone: the delivery fails as it would unsigned
        except Exception:
            # A message the signer cannot read still goes: unsigned, it may pass DMARC by SPF.
            log.exception("DKIM signing failed; the message goes unsigned")
            return b""

    async def _transaction(
        self, mail_from: str, recipients: Sequence[str], body: bytes, dsn_envid: str | None
    ) -> dict[str, Reply]:
        smtp = self._smtp
        assert smtp is not None
        results: dict[str, Reply] = {}
        options: list[str] = []
        if not body.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        encoding = "ascii"
        if not (mail_from.isascii() and all(r.isascii() for r in recipients)):
            if smtp.supports_extension("smtputf8"):
                options.append("SMTPUTF8")
                encoding = "utf-8"
            elif not mail_from.isascii():
                return dict.fromkeys(recipients, _NO_SMTPUTF8)
            else:
                results = {r: _NO_SMTPUTF8 for r in recipients if not r.isascii()}
                recipients = [r for r in recipients if r.isascii()]
        dsn = False
        if dsn_envid is not None:
            dsn = smtp.supports_extension("dsn")
            if dsn:
                options += dsn_mail_options(dsn_envid)
            else:
                log.debug("%s offers no DSN: none asked for %s", self._where(), dsn_envid)
        try:
            await smtp.mail(mail_from, options=options, encoding=encoding)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _StaleConnection from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            if exc.code == 421:  # the server is closing this connection (idle too long)
                raise _StaleConnection from exc
            await self._reset(smtp)
            return results | dict.fromkeys(recipients, _reply(exc))
        accepted: list[str] = []
        for rcpt in recipients:
            try:
                reply = await smtp.rcpt(
                    rcpt, options=dsn_rcpt_options(rcpt) if dsn else None, encoding=encoding
                )
            except aiosmtplib.SMTPRecipientRefused as exc:
                results[rcpt] = _reply(exc)
            else:
                results[rcpt] = Reply(reply.code, reply.message)
                accepted.append(rcpt)
        if not accepted:
            await self._reset(smtp)
            return results
        try:
            reply = await smtp.data(body)
            final = Reply(reply.code, reply.message)
        except aiosmtplib.SMTPDataError as exc:
            final = _reply(exc)
            await self._reset(smtp)
        return results | dict.fromkeys(accepted, final)

    @staticmethod
    async def _reset(smtp: aiosmtplib.SMTP) -> None:
        # A failed RSET needs no handling here: the next MAIL notices and reconnects.
        if not smtp.is_connected:
            return
        try:
            await smtp.rset()
        except aiosmtplib.SMTPException:
            pass


class _StaleConnection(Exception):
    """The server closed a kept connection before this transaction started."""
