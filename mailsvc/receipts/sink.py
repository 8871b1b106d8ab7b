"""Reports arriving at the VERP address ``bounces+TOKEN@<domain>``: DSNs and MDNs for
distribution messages, credited to the one delivery the token names.

A token is checked at RCPT: a forged or unknown one is refused there and logged, and never
credited. An accepted report is parsed and its events are committed before the server answers
250, so a report the server took is never lost.

The token is the key: it names the delivery. The address the report names is a cross-check:
a report is credited only when it names that delivery's address. One that names someone else
(a forwarded copy, a misread bounce, a report for another message) is recorded in the log with
both sides and credits nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mailsvc.domain.outcome import stored_text
from mailsvc.domain.receipt_states import EventKind, EventSource
from mailsvc.domain.vocabulary import reason_label
from mailsvc.receipts.parse import DeliveryReport, ReportRecipient, is_rejection, scan
from mailsvc.receipts.tokens import TokenSigner
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import ROUTE_SMTP, route_for
from mailsvc.storage.sessions import ReceiptStore

log = logging.getLogger(__name__)

VERP_PREFIX = "bounces+"
# DSN actions and MDN dispositions -> the receipt event they are evidence of (a success for a
# copy that left through the smarthost is credited as delivered at the remote end).
_DSN_EVENTS = {
    "failed": EventKind.FAILED,
    "delayed": EventKind.DELAYED,
    "delivered": EventKind.DELIVERED,
    "relayed": EventKind.DELIVERED,
    "expanded": EventKind.DELIVERED,
}
_MDN_EVENTS = {"displayed": EventKind.OPENED}


@dataclass(frozen=True)
class Credited:
    recipient_id: int
    kind: EventKind


class ReportSink:
    """Checks VERP tokens and turns the reports that carry them into receipt events."""

    def __init__(self, store: ReceiptStore, signer: TokenSigner, domain: str) -> None:
        self.store = store
        self.signer = signer
        self.domain = domain.lower()

    def is_report_address(self, address: str) -> bool:
        local, at, domain = address.rpartition("@")
        return bool(at) and domain.lower() == self.domain and local.lower().startswith(VERP_PREFIX)

    def remote(self, address: str) -> bool:
        """Whether a copy to ``address`` leaves through the smarthost (the delivery route)."""
        return route_for(address, (self.domain,)) == ROUTE_SMTP

    def recipient_id(self, address: str) -> int | None:
        """The delivery a report address names, or None for a forged or malformed token."""
        local = address.rpartition("@")[0]
        return self.signer.verify_verp(local[len(VERP_PREFIX) :])

    async def accept(self, raw: bytes, addresses: Sequence[str]) -> list[Credited]:
        """Parse ``raw`` and credit its report to the deliveries ``addresses`` name (each a
        report address whose token verified at RCPT). Committed before returning."""
        report = await asyncio.to_thread(scan, raw)
        credited: list[Credited] = []
        if report.kind == "none":
            log.info("report address got a message that is not a DSN or MDN: not credited")
            return credited
        for address in addresses:
            recipient_id = self.recipient_id(address)
            if recipient_id is None:
                log.warning("report for forged token <%s>: not credited", address)
                continue
            row = await self.store.recipient(recipient_id)
            if row is None:
                log.warning("report for unknown delivery %d <%s>: dropped", recipient_id, address)
                continue
            entry = _matching(report, row.address)
            if entry is None:
                log.warning(
                    "%s for delivery %d (token of <%s>) names %s (reporter %s): "
                    "address mismatch, not credited",
                    report.kind,
                    recipient_id,
                    row.address,
                    ", ".join(f"<{r.address}> {r.action}" for r in report.recipients) or "nobody",
                    report.reporter or "unknown",
                )
                continue
            kind = (_DSN_EVENTS if report.kind == "dsn" else _MDN_EVENTS).get(entry.action)
            if kind is EventKind.DELIVERED and self.remote(row.address):
                # The copy left through the smarthost: this report is the remote end's word.
                kind = EventKind.DELIVERED_REMOTE
            if report.kind == "mdn" and is_rejection(entry):
                kind = EventKind.FAILED
            if kind is None:
                log.info(
                    "%s for delivery %d: action %r is not a receipt",
                    report.kind,
                    recipient_id,
                    entry.action,
                )
                continue
            source = EventSource.DSN if report.kind == "dsn" else EventSource.MDN
            await self.store.add_event(
                recipient_id, kind, source, _evidence(report, entry), at=utcnow()
            )
            credited.append(Credited(recipient_id, kind))
            log.info("%s credited to delivery %d: %s", report.kind, recipient_id, kind.value)
        return credited


def _matching(report: DeliveryReport, address: str) -> ReportRecipient | None:
    """The report's entry about ``address`` (the token's delivery), or None: the cross-check.
    The parser reads the address the message was sent to (Original-Recipient) besides the
    final one, so an alias or forward downstream does not hide it."""
    wanted = _comparable(address)
    for entry in report.recipients:
        if wanted in (_comparable(entry.address), _comparable(entry.final_recipient)):
            return entry
    return None


def _comparable(address: str) -> str:
    return address.strip().strip("<>").lower()


def _evidence(report: DeliveryReport, entry: ReportRecipient) -> str:
    head = f"{report.kind.upper()} from {report.reporter or 'unknown'}: {entry.action}"
    if entry.status:
        head += f" {entry.status} ({'permanent' if entry.permanent else 'temporary'})"
    if entry.reason is not None:
        head += f", {reason_label(entry.reason, 'en')}"
    if entry.diagnostic:
        head += f" — {entry.diagnostic}"
    head += f"\naddress cross-check: the report names <{entry.address}>"
    if entry.final_recipient and entry.final_recipient != entry.address:
        head += f" (final recipient <{entry.final_recipient}>)"
    head += ", the token's delivery"
    # The report's own text: a control character (a NUL, which PostgreSQL's text refuses) is
    # shown as "?" rather than failing the report again at every retry of its sender.
    return stored_text(head + "\n" + report.evidence)
