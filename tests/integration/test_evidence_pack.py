"""The signed evidence pack on the real stack: a notice delivered by Dovecot, opened and
acknowledged, exported as PDF/A-3 with the evidence data embedded, signed; the signature
verifies with pyhanko and with poppler's pdfsig, and fails after one byte is changed."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pypdf
import pytest

from mailsvc.app import Parts, start_service
from mailsvc.config import Settings
from mailsvc.distribution.service import DistributionError
from mailsvc.domain.receipt_states import EventKind
from mailsvc.domain.vocabulary import state_label
from mailsvc.mailbox import read_inbox
from mailsvc.receipts.evidence.pack import JSON_NAME
from mailsvc.receipts.evidence.signing import identity, verify_pdf
from tests.integration.test_distribution_flow import (
    _all_have,
    ack_url,
    councillors,
    distribution_message,
    local_now,
    read_as_councillor,
    session_with_pdf,
    wait_until,
)

pytestmark = pytest.mark.asyncio


def pdfsig(path: Path) -> str:
    tool = shutil.which("pdfsig")
    assert tool, "pdfsig (Debian package poppler-utils) is needed: make test installs it"
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def embedded_json(pdf: bytes) -> dict[str, Any]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    (data,) = reader.attachments[JSON_NAME]
    loaded: dict[str, Any] = json.loads(data)
    return loaded


async def test_pack_of_a_delivered_opened_acknowledged_notice(
    settings: Settings,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    people = await councillors(add_councillor)
    session, doc = await session_with_pdf(parts, tmp_path)
    service = await start_service(settings)
    try:
        distributions = parts.distributions()
        dist = await distributions.schedule(session.number, at=local_now(), actor="pytest")
        store = distributions.store
        assert await wait_until(
            lambda: _all_have(store, dist.id, EventKind.DELIVERED, len(people)), within=30
        )
        await read_as_councillor(settings, people[0].address, people[0].password)
        assert await distributions.check_opened() == 1
        recipient = next(
            r for r in await store.recipients(dist.id) if r.address == people[1].address
        )
        assert await distributions.acknowledge(recipient.id, dist.id, "POST from pytest")
        # The acknowledgement page tells the councillor what was recorded.
        inbox = await read_inbox(
            settings.stack.host, settings.stack.imap_port, people[1].address, people[1].password
        )
        async with httpx.AsyncClient() as client:
            page = await client.get(ack_url(distribution_message(inbox)))
        assert page.status_code == 200 and 'id="recorded"' in page.text
        listed = page.text.split('id="recorded"', 1)[1].split("</ul>", 1)[0]
        for kind in (EventKind.DELIVERED, EventKind.ACKNOWLEDGED):
            assert state_label(kind, "pl") in listed, kind
        assert state_label(EventKind.OPENED, "pl") not in listed  # this one did not open it

        pack = await distributions.evidence_pack(session.number)
    finally:
        await service.stop()

    # PDF/A-3B with the evidence data as its associated file.
    assert pack.startswith(b"%PDF-")
    assert b"<pdfaid:part>3</pdfaid:part>" in pack
    assert b"<pdfaid:conformance>B</pdfaid:conformance>" in pack
    assert b"/OutputIntents" in pack and b"/AFRelationship /Data" in pack
    data = embedded_json(pack)
    assert data["session"]["number"] == "XV/2026"
    assert [d["sha256"] for d in data["documents"]] == [doc.sha256]
    by_address = {r["address"]: r for r in data["recipients"]}
    assert set(by_address) == {p.address for p in people}
    assert by_address[people[0].address]["state"] == "opened"
    assert by_address[people[1].address]["state"] == "acknowledged"
    delivered = [e for e in by_address[people[2].address]["events"] if e["kind"] == "delivered"]
    assert delivered and "250" in delivered[0]["evidence"]  # the raw LMTP reply
    (notice,) = data["notice"]
    assert notice["deadline"] and sorted(notice["in_time"]) == sorted(p.address for p in people)
    assert data["signer"]["self_signed"] is True

    # The text a person reads: the self-signed warning on the first page, the timelines.
    reader = pypdf.PdfReader(io.BytesIO(pack))
    first = reader.pages[0].extract_text()
    assert "samopodpisany" in first
    text = "".join(p.extract_text() for p in reader.pages)
    assert doc.sha256 in text.replace("\n", "")
    assert people[1].address in text

    # The signature: intact, valid, covering the document; both validators agree.
    who = await asyncio.to_thread(identity, settings)
    verdict = await asyncio.to_thread(verify_pdf, pack, who)
    assert verdict.intact and verdict.valid and verdict.covers_document
    signed = tmp_path / "pack.pdf"
    signed.write_bytes(pack)
    report = pdfsig(signed)
    assert "Signature is Valid" in report, report

    # One byte changed inside the signed part (a page's text): both say so.
    position = pack.index(b"stream", len(pack) // 4) + 20
    tampered = bytearray(pack)
    tampered[position] ^= 0x01
    verdict = await asyncio.to_thread(verify_pdf, bytes(tampered), who)
    assert not (verdict.intact and verdict.valid)
    bad = tmp_path / "tampered.pdf"
    bad.write_bytes(bytes(tampered))
    assert "Signature is Valid" not in pdfsig(bad)


async def test_pack_of_an_unknown_session_is_refused(parts: Parts) -> None:
    with pytest.raises(DistributionError, match="XX/2099"):
        await parts.distributions().evidence_pack("XX/2099")
