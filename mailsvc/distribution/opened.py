"""The opened check: a delivered distribution message with the \\Seen flag in the councillor's
mailbox counts as opened (read-only IMAP, through the mailbox store's master user).

The check logs in to ``clients.imap_host`` with ``clients.imap_security`` (IMAPS or STARTTLS,
the certificate verified; clear text only to a loopback host, which the configuration check
already demands at start). A TLS failure records nothing and is logged once per run as an error:
it concerns every mailbox alike and is fixed in the configuration or the certificate.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from mailsvc.config import Settings
from mailsvc.domain.receipt_states import EventKind, EventSource
from mailsvc.storage.sessions import ReceiptStore

log = logging.getLogger(__name__)


async def check_opened(settings: Settings, store: ReceiptStore, *, now: datetime) -> int:
    """Look for the \\Seen flag of delivered, not yet opened distribution messages in the
    councillors' mailboxes, for distributions started in the last ``imap_check_days``. Returns
    how many were found opened."""
    from mailsvc.mailbox import ImapServer
    from mailsvc.mailstore import master_credentials
    from mailsvc.receipts.imapcheck import SeenCheckFailure, check_many

    since = now - timedelta(days=settings.distribution.imap_check_days)
    targets: dict[str, dict[str, int]] = {}
    for dist in await store.distributions(statuses=("sending", "sent")):
        if (dist.started_at or dist.due_at) < since:
            continue
        delivered = await store.recipients_with_kind(dist.id, EventKind.DELIVERED)
        opened = await store.recipients_with_kind(dist.id, EventKind.OPENED)
        for r in await store.recipients(dist.id):
            if r.role == "councillor" and r.id in delivered and r.id not in opened:
                targets.setdefault(r.address, {})[r.message_id] = r.id
    if not targets:
        return 0
    server = ImapServer.from_settings(settings)
    results = await check_many(
        {mailbox: list(ids) for mailbox, ids in targets.items()},
        lambda mailbox: master_credentials(settings, mailbox),
        server.host,
        server.port,
        ssl_context=server.ssl_context(),
        starttls=server.starttls,
    )
    insecure = (SeenCheckFailure.TLS_FAILED, SeenCheckFailure.PLAINTEXT_REFUSED)
    refused: set[str] = set()
    found = 0
    for result in results:
        if result.failure in insecure and result.error is not None:
            refused.add(result.error)
            continue
        if result.error is not None:
            log.warning("IMAP check of %s: %s", result.mailbox, result.error)
            continue
        for message_id, folder in result.seen.items():
            recipient_id = targets[result.mailbox].get(message_id)
            if recipient_id is None:
                continue
            evidence = f"IMAP: {message_id} has \\Seen in folder {folder!r} of {result.mailbox}"
            if await store.add_event(
                recipient_id, EventKind.OPENED, EventSource.IMAP, evidence, once=True
            ):
                found += 1
    for error in sorted(refused):
        log.error(
            "opened check: nothing recorded, no secure IMAP connection: %s (clients.imap_host,"
            " clients.imap_security, clients.imap_ca_file)",
            error,
        )
    return found
