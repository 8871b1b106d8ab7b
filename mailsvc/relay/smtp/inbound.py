"""Inbound SMTP (residents → councillors): recipient checks at RCPT, durable queueing at DATA.

At DATA the message gets our ``Received`` and ``Authentication-Results`` fields; before that,
Authentication-Results fields in its header that claim our own authserv-id (``smtp_hostname``)
are removed (RFC 8601 section 5, ``authres.remove_forged_results``). Every other byte is kept.
Our Authentication-Results field is thus always the first field of the stored message: the
delivery worker reads it back to decide whether the sender may get an acknowledgement or a
bounce (``authres.verdict``).

Defences of this door (port 25, open to anyone):

* Mail claiming the council's own domains (``relay.own_domains`` and ``domain``, subdomains
  too) must prove it: MAIL FROM in one of them needs SPF pass for it (awaited at MAIL FROM), a
  header From in one of them needs SPF pass or a DKIM signature of exactly that domain (at the
  end of DATA). Otherwise 550 5.7.1 naming the submission port, where councillors authenticate.
  DSNs and MDNs for the report addresses (``bounces+TOKEN@``) are taken before the From check.
* Every refused recipient counts as a bad command (``CouncilSMTP.count_refusal``): a run of
  guesses ends with 421 like any other run of errors.
* After ``smtp.enumeration_misses`` refused recipients from one client within an hour, unknown
  addresses and councillors whose mandate ended get one and the same reply.
* Per-client state (rates, misses) is keyed by IPv4 address or IPv6 /64 and forgotten by age
  (``clients``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, Protocol

import dns.resolver
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession

from mailsvc.config import Settings
from mailsvc.domain.relay import (
    LocalRecipient,
    RefusalKind,
    classify_recipient,
    header_nul_line,
)
from mailsvc.errors import StorageUnavailable
from mailsvc.receipts.sink import ReportSink
from mailsvc.relay.counters import Counters
from mailsvc.relay.smtp import replies
from mailsvc.relay.smtp.authres import (
    AuthResults,
    EarlySpf,
    authenticate,
    authentication_results_header,
    domain_authenticated,
    parse_results,
    remove_forged_results,
    start_spf,
)
from mailsvc.relay.smtp.clients import MissCounter, RateLimiter
from mailsvc.relay.smtp.owndomain import claimed_own_domains, domain_of, own_domain
from mailsvc.relay.smtp.reports import accept_reports
from mailsvc.relay.smtp.server import (
    AdvertisesExtensions,
    ConnectionLimiter,
    CouncilSMTP,
)
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import ORIGIN_INBOUND, MailQueue
from mailsvc.storage.relaylog import RelayEntry, RelayLog
from mailsvc.storage.shared_files import SharedFiles
from mailsvc.storage.spool import SpooledBody, spool_dir, stored_parts
from provisioning.directory import CouncillorEntry
from provisioning.errors import DirectoryError, DirectoryUnavailable

log = logging.getLogger(__name__)


class RecipientDirectory(Protocol):
    async def find_by_address(self, address: str) -> CouncillorEntry | None: ...

    async def expand_group(self, name: str) -> list[CouncillorEntry] | None: ...


def _clean(text: str, limit: int = 200) -> str:
    """Make client-supplied text safe to put in a header: no CR/LF/control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


class InboundHandler(AdvertisesExtensions):
    """aiosmtpd handler: answers RCPT from the directory and 250 at DATA only once stored.

    Bodies over ``smtp.spool_threshold`` reach it in their own spool file (``spools_bodies``).
    """

    spools_bodies = True

    def __init__(
        self,
        settings: Settings,
        directory: RecipientDirectory,
        queue: MailQueue,
        on_queued: Callable[[], None] = lambda: None,
        relay_log: RelayLog | None = None,
        reports: ReportSink | None = None,
        counters: Counters | None = None,
        shared: SharedFiles | None = None,
    ) -> None:
        self.relay_log = relay_log
        # Sessions and refusals of this server, for /metrics.
        self.counters = counters
        self.settings = settings
        self.directory = directory
        self.queue = queue
        self.on_queued = on_queued
        self.reports = reports
        self.domains = (settings.domain,)
        self.rate = RateLimiter(settings.smtp.max_messages_per_ip_per_minute)
        self.misses = MissCounter(_MISS_WINDOW)
        self.own_domains = settings.relay.own_domain_list(settings.domain)
        self.resolver = dns_resolver(settings.smtp.dns_resolver)
        # Several nodes (PostgreSQL): a spooled body is published for the node that delivers it.
        self.shared = shared

    async def handle_MAIL(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not self.rate.allow(_peer_ip(session)):
            log.warning("rate limit: %s sent too many messages", _peer_ip(session))
            return replies.S451_RATE
        if not valid_sender(address):
            return replies.S501_BAD_SENDER
        early_spf = None
        if self.settings.smtp.authentication_checks:
            # SPF needs only the envelope: let it run while recipients and data arrive.
            early_spf = start_spf(
                authserv_id=self.settings.smtp_hostname,
                client_ip=_peer_ip(session),
                helo=session.host_name or "",
                mail_from=address or "",
                budget=self.settings.smtp.authentication_budget,
                resolver=self.resolver,
            )
        domain = own_domain(domain_of(address), self.own_domains)
        if domain is not None:
            spf = await _spf_result(early_spf, self.settings.smtp.authentication_budget)
            if spf != "pass":
                log.warning(
                    "MAIL FROM <%s> from %s refused: own domain, SPF %s",
                    _clean(address),
                    _peer_ip(session),
                    spf or "not checked",
                )
                return replies.S550_OWN_DOMAIN_SENDER.format(
                    address=_clean(address, 254), domain=domain, port=self.settings.submission.port
                )
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.early_spf = early_spf  # type: ignore[attr-defined]
        return replies.S250_MAIL_OK

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.smtp.max_recipients:
            return replies.S452_TOO_MANY_RCPT
        if self.reports is not None and self.reports.is_report_address(address):
            reply = self._report_rcpt(envelope, address)
            if not reply.startswith("250"):
                _count_refusal(server)
            return reply
        decision = classify_recipient(address, self.domains)
        if not isinstance(decision, LocalRecipient):
            if decision.kind is not RefusalKind.TOO_MANY_RECIPIENTS:
                _count_refusal(server)
            return replies.refusal_reply(decision.kind, address, self.settings.office_address)
        try:
            entry = await self.directory.find_by_address(decision.address)
            members = None
            if entry is None:
                # Group and role addresses (rada@, komisja-…@, przewodniczacy@) expand to the
                # members active right now.
                members = await self.directory.expand_group(decision.local_part)
        except DirectoryUnavailable as exc:
            log.warning("RCPT <%s>: directory unavailable: %s", decision.address, exc)
            return replies.S451_DIRECTORY
        except DirectoryError as exc:
            # A misconfigured directory is not the sender's fault: keep it temporary.
            log.error("RCPT <%s>: directory error: %s", decision.address, exc)
            return replies.S451_DIRECTORY
        if entry is None and members:
            for member in members:
                if member.address not in envelope.rcpt_tos:
                    envelope.rcpt_tos.append(member.address)
            return replies.S250_RCPT_OK
        if entry is None:
            return self._miss(server, session, RefusalKind.UNKNOWN_USER, decision.address)
        if not entry.active:
            return self._miss(server, session, RefusalKind.MANDATE_ENDED, decision.address)
        if entry.address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(entry.address)
        return replies.S250_RCPT_OK

    def _miss(self, server: SMTP, session: SmtpSession, kind: RefusalKind, address: str) -> str:
        """Refuse an unknown address or an ended mandate; past the client's allowance of
        misses, both with the same reply."""
        _count_refusal(server)
        office = self.settings.office_address
        if self.misses.miss(_peer_ip(session)) > self.settings.smtp.enumeration_misses:
            return replies.S550_NOT_HERE.format(address=_clean(address, 254), office=office)
        return replies.refusal_reply(kind, address, office)

    def _report_rcpt(self, envelope: Envelope, address: str) -> str:
        """A DSN or MDN for a distribution message: only a token we signed is accepted."""
        assert self.reports is not None
        if self.reports.recipient_id(address) is None:
            log.warning("RCPT <%s>: forged or unknown report token", _clean(address))
            return replies.S550_UNKNOWN.format(address=_clean(address, 254))
        envelope.rcpt_tos.append(address)
        return replies.S250_RCPT_OK

    def _received_header(self, session: SmtpSession, envelope: Envelope) -> bytes:
        ip = _peer_ip(session)
        helo = _clean(session.host_name or "unknown")
        rcpt = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        tls = _tls_details(session)
        proto = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP"
        if tls:
            proto += "S"  # RFC 3848
        header = (
            f"Received: from {helo} ([{ip}])\r\n"
            + (f"\t({tls})\r\n" if tls else "")
            + f"\tby {self.settings.smtp_hostname} (mailsvc) with {proto}"
            + (f"\r\n\tfor <{rcpt}>" if rcpt else "")
            + f"; {formatdate(localtime=False, usegmt=True)}\r\n"
        )
        return header.encode("utf-8")

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        if not envelope.rcpt_tos:
            return replies.S554_NO_RECIPIENTS
        content = envelope.original_content
        if content is None:
            content = envelope.content if isinstance(envelope.content, bytes) else b""
        refused = refuse_nul_header(content, envelope.mail_from or "", _peer_ip(session))
        if refused is not None:
            return refused
        # A large body arrived in its own file; ``content`` is then only the message's header.
        spooled: SpooledBody | None = getattr(envelope, "spooled", None)
        if self.reports is not None:
            if spooled is not None and any(map(self.reports.is_report_address, envelope.rcpt_tos)):
                # A report that large is rare (a returned distribution copy): read it whole.
                whole = content + await asyncio.to_thread(spooled.read_text)
                reply = await accept_reports(self.reports, envelope, whole)
            else:
                reply = await accept_reports(self.reports, envelope, content)
            if reply is not None:
                return reply
        # Also with the checks off: readers and filters trust a result in our host's name.
        kept = remove_forged_results(content, self.settings.smtp_hostname)
        body = self._received_header(session, envelope) + kept
        results: AuthResults | None = None
        if self.settings.smtp.authentication_checks:
            # DKIM is verified on the message as sent: a signature may cover a removed field.
            results = await authenticate(
                authserv_id=self.settings.smtp_hostname,
                client_ip=_peer_ip(session),
                helo=session.host_name or "",
                mail_from=envelope.mail_from or "",
                message=content,
                budget=self.settings.smtp.authentication_budget,
                resolver=self.resolver,
                early_spf=getattr(envelope, "early_spf", None),
                rest=spooled.read_text if spooled is not None else None,
            )
            body = authentication_results_header(results) + body
        refusal = self._own_domain_from(session, envelope, content, results)
        if refusal is not None:
            return refusal
        client = _peer_ip(session)
        try:
            if spooled is not None and self.shared is not None:
                await self.shared.publish([spooled.path])  # another node may deliver it
            queue_id = await self.queue.enqueue(
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                body,
                client=client,
                origin=ORIGIN_INBOUND,
                # A lone session: nobody could share its commit, and its client waits for it.
                alone=getattr(server, "connections", 0) == 1,
                parts=stored_parts(spooled) if spooled is not None else None,
            )
        except StorageUnavailable as exc:
            log.error("DATA from <%s>: not stored: %s", envelope.mail_from, exc)
            return replies.S451_STORAGE
        except Exception:
            log.exception("DATA from <%s>: unexpected error while storing", envelope.mail_from)
            return replies.S451_LOCAL_ERROR
        size = len(body)
        if spooled is not None:
            spooled.taken = True
            size += spooled.size
        log.info(
            "queued %s from=<%s> to=%s size=%d",
            queue_id,
            envelope.mail_from,
            ",".join(f"<{r}>" for r in envelope.rcpt_tos),
            size,
        )
        self.on_queued()
        if self.relay_log is not None:
            self.relay_log.record(
                RelayEntry(
                    received_at=utcnow(),
                    queue_id=queue_id,
                    message_id=header_message_id(content),
                    sender=envelope.mail_from or "",
                    recipients=tuple(envelope.rcpt_tos),
                    size=size,
                )
            )
        return replies.S250_QUEUED.format(queue_id=queue_id)

    def _own_domain_from(
        self,
        session: SmtpSession,
        envelope: Envelope,
        content: bytes,
        results: AuthResults | None,
    ) -> str | None:
        """550 for a header From in our own domains that the checks did not authenticate."""
        claimed = claimed_own_domains(content, self.own_domains)
        if not claimed:
            return None
        verdict = parse_results(results.header_value) if results is not None else None
        for domain in claimed:
            if not domain_authenticated(verdict, domain):
                log.warning(
                    "DATA from <%s> (%s) refused: From: in own domain %s, not authenticated",
                    _clean(envelope.mail_from or ""),
                    _peer_ip(session),
                    domain,
                )
                return replies.S550_OWN_DOMAIN_FROM.format(
                    domain=domain, port=self.settings.submission.port
                )
        return None


# Misses (refused recipients) are counted per client over this many seconds.
_MISS_WINDOW = 3600.0


def _count_refusal(server: SMTP) -> None:
    if isinstance(server, CouncilSMTP):
        server.count_refusal()


async def _spf_result(early: EarlySpf | None, budget: float) -> str:
    """The SPF result begun at MAIL FROM, within the checks' budget; "" without one."""
    if early is None or early.task is None:
        return "" if early is None else "none"
    if early.task.cancelled():
        return "temperror"
    try:
        # Shielded: the same check still serves the Authentication-Results at DATA.
        return await asyncio.wait_for(asyncio.shield(early.task), budget + 0.5)
    except TimeoutError:
        return "temperror"
    except Exception:
        log.exception("SPF at MAIL FROM failed unexpectedly")
        return "temperror"


_HEADER_END = re.compile(rb"\r?\n\r?\n")


# The first Message-ID field of a header block with its continuation lines (as the email
# package's parser finds it, without building every other field of the header on the way).
_MESSAGE_ID_FIELD = re.compile(
    rb"^message-id[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE
)


def header_message_id(content: bytes) -> str | None:
    """The Message-ID of a raw message (looked for in the header only), or None."""
    if content.startswith((b"\r\n", b"\n")):
        return None  # an empty header: everything after the blank line is body
    end = _HEADER_END.search(content, 0, 256 * 1024)
    head = content[: end.start()] if end else content[: 256 * 1024]
    found = _MESSAGE_ID_FIELD.search(head)
    ids = message_ids(found.group(1).decode("utf-8", "replace")) if found else []
    return ids[0] if ids else None


def message_ids(value: str) -> list[str]:
    """Message-IDs (<…>) found in a Message-ID, In-Reply-To or References value."""
    return re.findall(r"<[^<>\s]{1,250}>", value)


def dns_resolver(spec: str) -> dns.resolver.Resolver | None:
    """A resolver for "host" or "host:port"; None means the system's (authres default)."""
    if not spec:
        return None
    host, _, port = spec.partition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port or 53)
    resolver.timeout = 1.0
    resolver.lifetime = 5.0
    return resolver


def refuse_nul_header(content: bytes, sender: str, client: str) -> str | None:
    """550 5.6.0 for a message with a NUL byte in its header (``header_nul_line``), else None:
    before anything of it reaches the database (reports included)."""
    line = header_nul_line(content)
    if line is None:
        return None
    log.warning(
        "DATA from <%s> (%s) refused: NUL byte in header line %d", _clean(sender), client, line
    )
    return replies.S550_NUL_IN_HEADER.format(line=line)


def valid_sender(address: str) -> bool:
    """The null sender, or one printable address with a single @ and a dotted domain."""
    if address in ("", "<>"):  # the null reverse path (aiosmtpd hands it over as "<>")
        return True
    if len(address) > 254 or any(ord(ch) < 33 or ord(ch) == 127 for ch in address):
        return False
    local, at, domain = address.rpartition("@")
    return bool(at and local and "." in domain and "@" not in local.strip('"'))


def _peer_ip(session: SmtpSession) -> str:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _tls_details(session: SmtpSession) -> str:
    """'using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)' or '' without TLS."""
    extra: Any = session.ssl
    if not extra:
        return ""
    cipher = extra.get("cipher") if isinstance(extra, dict) else None
    if not cipher:
        return "using TLS"
    name, version, bits = cipher
    return f"using {version} with cipher {name} ({bits}/{bits} bits)"


def smtp_factory(
    settings: Settings,
    handler: object,
    *,
    tls: ssl.SSLContext | None = None,
    **extra: Any,
) -> Callable[[], SMTP]:
    """Protocol factory for one listening socket; all its connections share one limiter."""
    limiter = ConnectionLimiter(settings.smtp.max_connections, settings.smtp.max_connections_per_ip)
    prototype: dict[str, Any] = {}
    spools = getattr(handler, "spools_bodies", False) and settings.smtp.spool_threshold > 0

    def make() -> SMTP:
        return CouncilSMTP(
            handler,
            limiter=limiter,
            prototype=prototype,
            max_bad_commands=settings.smtp.max_bad_commands,
            session_max_seconds=settings.smtp.session_max_seconds,
            spool_dir=spool_dir(settings.var_dir) if spools else None,
            spool_threshold=settings.smtp.spool_threshold,
            data_size_limit=settings.smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.smtp_hostname,
            ident="mailsvc",
            timeout=settings.smtp.timeout,
            tls_context=tls,
            **extra,
        )

    return make


async def start_inbound(
    settings: Settings, handler: InboundHandler, tls: ssl.SSLContext | None = None
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        smtp_factory(settings, handler, tls=tls, counters=handler.counters, server_name="inbound"),
        host=settings.smtp.host,
        port=settings.smtp.port,
        reuse_address=True,
    )
