"""/metrics without the servers: the refusal codes, the counters' bound, and the figures read
from a real SQLite database (a distribution being delivered, its receipts, the queue)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.domain.receipt_states import EventKind, EventSource
from mailsvc.metrics import Metrics
from mailsvc.relay.counters import DELIVERIES, MAX_SERIES, SMTP_REFUSALS, Counters
from mailsvc.relay.smtp import replies
from mailsvc.storage.db import create_engine, create_schema, utcnow
from mailsvc.storage.queue import MailQueue
from mailsvc.storage.sessions import ReceiptStore
from mailsvc.storage.tables import deliveries, messages


def test_every_refusal_of_ours_has_its_own_code_and_names_no_address() -> None:
    values = {"address": "jan@example.org", "office": "biuro@rada.example", "domain": "rada"}
    values |= {"port": "587", "seconds": "30", "field": "From", "queue_id": "q", "name": "n"}
    values |= {"line": "3"}
    ours = [
        value.format(**values)
        for name, value in vars(replies).items()
        if name[:1] == "S" and name[1:2] in ("4", "5") and isinstance(value, str)
    ]
    assert len(ours) > 25
    for reply in ours:
        reason = replies.refusal_reason(reply)
        assert reason is not None and not reason.startswith("other"), reply
        assert "@" not in reason
    assert replies.refusal_reason(replies.S550_UNKNOWN.format(**values)) == "unknown_recipient"
    assert replies.refusal_reason("503 5.5.1 Error: need MAIL command") == "protocol_error"
    assert replies.refusal_reason("450 4.2.0 whatever") == "other_temporary"
    assert replies.refusal_reason(replies.S250_OK) is None


def test_counters_keep_the_number_of_series_bounded() -> None:
    forwarded: list[tuple[str, tuple[str, ...], int]] = []
    counters = Counters(lambda *count: forwarded.append(count))
    for n in range(MAX_SERIES + 10):
        counters.inc(SMTP_REFUSALS, "inbound", f"reason{n}")
    counters.inc(DELIVERIES, "lmtp", "delivered", by=3)
    assert counters.get(SMTP_REFUSALS, "other", "other") == 10
    assert counters.get(DELIVERIES, "lmtp", "delivered") == 3
    assert len(forwarded) == MAX_SERIES + 11
    with pytest.raises(ValueError, match="expected labels"):
        counters.inc(DELIVERIES, "lmtp")


async def test_metrics_show_a_distribution_in_progress_its_receipts_and_the_queue(
    tmp_path: Path,
) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={}).with_changes(
        var_dir=tmp_path, domain="rada.example"
    )
    engine = create_engine(settings.database_url)
    await create_schema(engine)
    store = ReceiptStore(engine)
    queue = MailQueue(engine, local_domains=(settings.domain,))
    now = utcnow()
    try:
        session = await store.create_session(
            number="XV/2026", kind="ordinary", starts_at=now, place="", title="", actor="pytest"
        )
        dist = await store.create_distribution(
            session_id=session.id,
            kind="notice",
            due_at=now,
            committee=None,
            document_ids=(),
            note="",
            replies_to=None,
            override_reason=None,
            actor="pytest",
        )
        assert await store.start_sending(dist.id, late=False)
        addresses = [f"radny{n}@rada.example" for n in range(4)]
        async with engine.begin() as conn:
            ids = await store.insert_recipients(
                conn,
                distribution_id=dist.id,
                recipients=[(a, a, "councillor", f"<{a}>") for a in addresses],
                at=now,
            )
        queued = [
            await queue.enqueue("rada@rada.example", [a], b"Subject: x\r\n\r\nx\r\n", origin="x")
            for a in addresses
        ]
        statuses = ["delivered", "deferred", "failed", "queued"]
        events = [
            [EventKind.DELIVERED, EventKind.ACKNOWLEDGED],
            [EventKind.DELAYED],
            [EventKind.FAILED],
            [],
        ]
        async with engine.begin() as conn:
            by_queue_id = dict(
                (await conn.execute(select(messages.c.queue_id, messages.c.id))).all()
            )
            pairs = [(r, by_queue_id[q]) for r, q in zip(ids, queued, strict=True)]
            await store.set_queue_messages(conn, pairs)
            for (_, message_id), status in zip(pairs, statuses, strict=True):
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.message_id == message_id)
                    .values(status=status)
                )
            for recipient_id, kinds in zip(ids, events, strict=True):
                for n, kind in enumerate([EventKind.QUEUED, *kinds]):
                    at = now + timedelta(seconds=n)
                    await store.insert_event(conn, recipient_id, kind, EventSource.LMTP, "", at)
    finally:
        await queue.close()
        await engine.dispose()

    counters = Counters()
    counters.inc(DELIVERIES, "lmtp", "delivered")
    metrics = Metrics(settings, counters, ["reminders"])
    try:
        page = (await metrics.render()).decode()
    finally:
        await metrics.close()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }
    progress = {
        state: found[("mailsvc_distribution_recipients", (("distribution", "1"), ("state", state)))]
        for state in ("sent", "pending", "failed")
    }
    assert progress == {"sent": 1, "pending": 2, "failed": 1}
    receipts = {labels[0][1]: v for (n, labels), v in found.items() if n == "mailsvc_receipts"}
    assert receipts == {"acknowledged": 1, "delayed": 1, "failed": 1, "queued": 1}
    assert found[("mailsvc_queue_deliveries", (("state", "deferred"),))] == 1
    assert found[("mailsvc_queue_deliveries", (("state", "queued"),))] == 1
    assert found[("mailsvc_deliveries_total", (("outcome", "delivered"), ("route", "lmtp")))] == 1
    assert found[("mailsvc_job_last_success_timestamp_seconds", (("job", "reminders"),))] == 0
    assert found[("mailsvc_database_up", ())] == 1
