"""The evidence pack of one session: what it holds, as JSON for machines and as an archival
PDF (PDF/A-3B) for people, the JSON embedded in the PDF as its associated data file.

Pure: built from a :class:`~mailsvc.domain.receipt_states.ReceiptMatrix` and the facts the use
case gathers (notice findings, the signer, the event chain); signing is :mod:`.signing`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fpdf.enums import OutputIntentSubType
from fpdf.output import PDFICCProfile
from PIL import ImageCms

from mailsvc.domain.localtime import local_time
from mailsvc.domain.receipt_states import ReceiptMatrix
from mailsvc.domain.vocabulary import state_label
from mailsvc.receipts.report import (
    FONT_DIR,
    council_zone,
    format_local,
    iso_utc,
    label,
    new_pdf,
)
from mailsvc.receipts.report.facts import distribution_title, distributions_by_id, header_lines
from mailsvc.receipts.report.labels import distribution_kind_label
from mailsvc.receipts.report.pdf import (
    distributions_section,
    documents_section,
    legend_section,
    matrix_section,
    summary_section,
)

JSON_NAME = "evidence.json"
FORMAT = "mailsvc-evidence/1"
EVIDENCE_SHORT = 200

_WORDS = {
    "pl": {
        "title": "Pakiet dowodowy doręczeń",
        "signed_by": "Podpisano elektronicznie (PAdES): {subject}, certyfikat SHA-256 {fp}, "
        "ważny do {until}.",
        "self_signed": "UWAGA: certyfikat samopodpisany, wygenerowany przez mailsvc "
        "(var/secrets/). Podpis pokazuje, że plik nie zmienił się od podpisania, ale nikt "
        "zewnętrzny nie poświadcza tożsamości podpisującego.",
        "tsa": "Znacznik czasu z zaufanego serwera (RFC 3161): {url}.",
        "no_tsa": "Bez znacznika czasu z zewnętrznego serwera: czas podpisu podaje serwer rady.",
        "attached": "Dane maszynowe (zdarzenia, odpowiedzi serwerów, łańcuch skrótów) są "
        "dołączone do tego pliku PDF jako załącznik {name}.",
        "proves": "Co pakiet dowodzi: które dokumenty (SHA-256) wysłano, komu i kiedy "
        "serwer pocztowy rady przyjął je do skrzynek, kiedy wiadomość otwarto lub "
        "potwierdzono, oraz że ten plik nie zmienił się od podpisania. Czego nie dowodzi: "
        "że radny przeczytał dokumenty; poprawności zegara serwera bez znacznika czasu; "
        "zdarzeń spoza systemu rady.",
        "notice": "Terminy doręczenia (reguły zawiadomień)",
        "notice_line": "{dist}: reguła „{rule}”, doręczenie najpóźniej {deadline}; "
        "w terminie: {in_time}, po terminie: {late}, niedoręczone: {missing}.",
        "notice_none": "{dist}: żadna reguła zawiadomień nie dotyczy tej wysyłki.",
        "late_one": "po terminie: {who} ({day})",
        "chain": "Łańcuch zdarzeń (SHA-256)",
        "chain_line": "Wysyłka {dist}: {count} zdarzeń, ostatni skrót {head}",
        "chain_none": "Brak łańcucha skrótów w tej bazie danych.",
        "chain_whole": "Łańcuch skrótów sprawdzono przy tworzeniu pakietu: jest nienaruszony. "
        "Skróty końcowe poniżej zostają podpisane razem z pakietem; późniejsza zmiana zapisów "
        "w bazie (mailsvc evidence verify) nie będzie się z nimi zgadzać.",
        "chain_broken": "UWAGA: łańcuch skrótów jest PRZERWANY: {what}",
        "timelines": "Przebieg doręczenia dla każdego radnego",
    },
    "en": {
        "title": "Delivery evidence pack",
        "signed_by": "Signed electronically (PAdES): {subject}, certificate SHA-256 {fp}, "
        "valid until {until}.",
        "self_signed": "NOTE: a self-signed certificate made by mailsvc (var/secrets/). The "
        "signature shows that the file has not changed since it was signed, but nobody "
        "outside vouches for the signer's identity.",
        "tsa": "Timestamp from a trusted server (RFC 3161): {url}.",
        "no_tsa": "No timestamp from an outside server: the council's server gives the time.",
        "attached": "The machine-readable data (events, server replies, hash chain) is "
        "attached to this PDF file as {name}.",
        "proves": "What the pack proves: which documents (SHA-256) were sent, to whom, when the "
        "council's mail server accepted them into the mailboxes, when a message was opened "
        "or acknowledged, and that this file has not changed since it was signed. What it "
        "does not prove: that a councillor read the documents; the server clock without a "
        "timestamp; events outside the council's system.",
        "notice": "Delivery deadlines (notice rules)",
        "notice_line": "{dist}: rule “{rule}”, delivery by {deadline}; in time: {in_time}, "
        "late: {late}, not delivered: {missing}.",
        "notice_none": "{dist}: no notice rule applies to this distribution.",
        "late_one": "late: {who} ({day})",
        "chain": "Event chain (SHA-256)",
        "chain_line": "Distribution {dist}: {count} events, last hash {head}",
        "chain_none": "No hash chain in this database.",
        "chain_whole": "The hash chain was checked when the pack was made: it is whole. The "
        "head hashes below are signed with the pack; a later change to the stored records "
        "(mailsvc evidence verify) will not match them.",
        "chain_broken": "NOTE: the hash chain is BROKEN: {what}",
        "timelines": "Delivery timeline of each councillor",
    },
}


def _word(language: str, key: str, **values: object) -> str:
    text = _WORDS.get(language, _WORDS["pl"])[key]
    return text.format(**values) if values else text


@dataclass(frozen=True)
class NoticeFinding:
    """How one distribution met the notice rules, councillor by councillor."""

    distribution_id: int
    rule: str  # the deciding rule, described; "" when none applies
    deadline: date | None
    in_time: tuple[str, ...]  # addresses delivered on or before the deadline
    late: tuple[tuple[str, date], ...]  # (address, local delivery day)
    not_delivered: tuple[str, ...]


@dataclass(frozen=True)
class Signer:
    subject: str
    fingerprint: str
    not_after: datetime
    self_signed: bool
    tsa_url: str


@dataclass(frozen=True)
class ChainSummary:
    """One distribution's receipt chain as verified when the pack was made."""

    distribution_id: int
    events: int  # chained events checked
    head: str  # SHA-256 hex of the last link ("" when nothing is chained yet)


@dataclass(frozen=True)
class ChainLink:
    """One stored event's place in its distribution's chain."""

    distribution_id: int
    event_id: int
    seq: int | None
    address: str
    kind: str
    prev_hash: str | None
    content_hash: str | None


@dataclass(frozen=True)
class EvidenceFacts:
    matrix: ReceiptMatrix
    notice: tuple[NoticeFinding, ...]
    signer: Signer
    chain: tuple[ChainSummary, ...] = ()
    links: tuple[ChainLink, ...] = ()
    # Empty when every chain verified whole; else what `mailsvc evidence verify` reports first.
    chain_broken: str = ""


def evidence_json(facts: EvidenceFacts) -> bytes:
    """Everything the PDF shows and more (full evidence texts), as canonical JSON (UTF-8,
    sorted keys): the same facts give the same bytes."""
    m = facts.matrix
    recipients: list[dict[str, Any]] = []
    for row in m.rows:
        for cell in row.cells:
            recipients.append(
                {
                    "name": row.name,
                    "address": row.address,
                    "distribution_id": cell.distribution_id,
                    "message_id": cell.message_id,
                    "state": cell.state.state.value,
                    "events": [
                        {
                            "kind": e.kind.value,
                            "at": iso_utc(e.at),
                            "source": e.source.value,
                            "evidence": e.evidence,
                        }
                        for e in cell.events
                    ],
                }
            )
    data = {
        "format": FORMAT,
        "council": m.council,
        "session": {
            "number": m.session_number,
            "kind": m.session_kind,
            "starts_at_local": m.session_at.isoformat(),
            "time_zone": m.time_zone,
            "place": m.place,
        },
        "generated_at": iso_utc(m.generated_at),
        "documents": [
            {"name": d.name, "sha256": d.sha256, "size": d.size, "pages": d.pages}
            for d in m.documents
        ],
        "distributions": [
            {
                "id": d.id,
                "kind": d.kind,
                "scheduled_for": iso_utc(d.scheduled_for),
                "sent_at": iso_utc(d.sent_at),
                "late": d.late,
                "override_reason": d.override_reason,
                "documents": list(d.documents),
            }
            for d in m.distributions
        ],
        "notice": [
            {
                "distribution_id": f.distribution_id,
                "rule": f.rule,
                "deadline": f.deadline.isoformat() if f.deadline else None,
                "in_time": list(f.in_time),
                "late": [{"address": a, "delivered_on": d.isoformat()} for a, d in f.late],
                "not_delivered": list(f.not_delivered),
            }
            for f in facts.notice
        ],
        "recipients": recipients,
        "chain": {
            "whole": not facts.chain_broken,
            "broken": facts.chain_broken or None,
            "heads": [
                {"distribution_id": c.distribution_id, "events": c.events, "head": c.head}
                for c in facts.chain
            ],
            "links": [
                {
                    "distribution_id": k.distribution_id,
                    "event_id": k.event_id,
                    "seq": k.seq,
                    "recipient": k.address,
                    "kind": k.kind,
                    "prev_hash": k.prev_hash,
                    "content_hash": k.content_hash,
                }
                for k in facts.links
            ],
        },
        "signer": {
            "subject": facts.signer.subject,
            "certificate_sha256": facts.signer.fingerprint,
            "not_after": iso_utc(facts.signer.not_after),
            "self_signed": facts.signer.self_signed,
            "tsa_url": facts.signer.tsa_url or None,
        },
    }
    return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")


def _srgb_profile() -> PDFICCProfile:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return PDFICCProfile(contents=profile, n=3, alternate="DeviceRGB")


def render_evidence_pdf(facts: EvidenceFacts, data: bytes, *, font_dir: Path = FONT_DIR) -> bytes:
    """The pack as PDF/A-3B: first page (signer, what it proves), documents, distributions,
    notice deadlines, summary, matrix, each councillor's timeline, the chain heads; ``data``
    (see :func:`evidence_json`) embedded as the associated file ``evidence.json``."""
    m = facts.matrix
    language = m.language
    zone = council_zone(m)
    generated = format_local(local_time(m.generated_at, zone), language, seconds=True)
    title = f"{_word(language, 'title')} — {m.council}, {m.session_number}"
    pdf = new_pdf(
        orientation="L",
        running_head=title,
        footer_note=label(language, "generated_short", at=generated),
        language=language,
        created_at=m.generated_at,
        title=title,
        font_dir=font_dir,
        compliance="PDFA_3B",
    )
    pdf.set_author(m.council)
    pdf.add_output_intent(
        OutputIntentSubType.PDFA,
        output_condition_identifier="sRGB",
        dest_output_profile=_srgb_profile(),
        info="sRGB IEC61966-2.1",
    )
    stamp = m.generated_at if m.generated_at.tzinfo else m.generated_at.replace(tzinfo=UTC)
    pdf.embed_file(
        bytes=data,
        basename=JSON_NAME,
        mime_type="application/json",
        associated_file_relationship="Data",
        modification_date=stamp,
        desc="mailsvc evidence data",
    )
    header = header_lines(m)
    pdf.heading(title, size=13, room=0)
    for line in header[1:]:
        pdf.paragraph(line, size=9)
    s = facts.signer
    pdf.ln(2)
    pdf.paragraph(
        _word(
            language,
            "signed_by",
            subject=s.subject,
            fp=s.fingerprint,
            until=s.not_after.date().isoformat(),
        ),
        size=8,
    )
    if s.self_signed:
        pdf.paragraph(_word(language, "self_signed"), size=8, bold=True)
    pdf.paragraph(
        _word(language, "tsa", url=s.tsa_url) if s.tsa_url else _word(language, "no_tsa"),
        size=8,
    )
    pdf.paragraph(_word(language, "attached", name=JSON_NAME), size=8)
    pdf.ln(1)
    pdf.paragraph(_word(language, "proves"), size=8)

    pdf.heading(label(language, "documents"))
    documents_section(pdf, m)
    pdf.heading(label(language, "distributions"))
    distributions_section(pdf, m, zone)
    pdf.heading(_word(language, "notice"))
    _notice_section(pdf, facts)
    pdf.heading(label(language, "summary"))
    summary_section(pdf, m)
    pdf.heading(label(language, "legend"))
    legend_section(pdf, language)
    pdf.heading(label(language, "matrix"), room=40)
    matrix_section(pdf, m, zone)
    pdf.heading(_word(language, "timelines"), room=40)
    _timelines(pdf, facts)
    pdf.heading(_word(language, "chain"))
    if facts.chain_broken:
        pdf.paragraph(_word(language, "chain_broken", what=facts.chain_broken), size=8, bold=True)
    elif facts.chain:
        pdf.paragraph(_word(language, "chain_whole"), size=8)
    if facts.chain:
        for c in facts.chain:
            pdf.paragraph(
                _word(language, "chain_line", dist=c.distribution_id, count=c.events, head=c.head),
                size=7,
            )
    else:
        pdf.paragraph(_word(language, "chain_none"), size=7)
    return bytes(pdf.output())


def _notice_section(pdf: Any, facts: EvidenceFacts) -> None:
    m = facts.matrix
    language = m.language
    by_id = distributions_by_id(m)
    for f in facts.notice:
        name = distribution_title(f.distribution_id, by_id, language)
        if f.deadline is None:
            pdf.paragraph(_word(language, "notice_none", dist=name), size=8)
            continue
        pdf.paragraph(
            _word(
                language,
                "notice_line",
                dist=name,
                rule=f.rule,
                deadline=f.deadline.isoformat(),
                in_time=len(f.in_time),
                late=len(f.late),
                missing=len(f.not_delivered),
            ),
            size=8,
        )
        for who, day in f.late:
            pdf.paragraph("  " + _word(language, "late_one", who=who, day=day.isoformat()), size=7)


def _timelines(pdf: Any, facts: EvidenceFacts) -> None:
    m = facts.matrix
    language = m.language
    zone = council_zone(m)
    by_id = distributions_by_id(m)
    for row in m.rows:
        pdf.paragraph(f"{row.name} <{row.address}>", size=8, bold=True)
        for cell in row.cells:
            dist = by_id.get(cell.distribution_id)
            kind = distribution_kind_label(dist.kind, language) if dist else ""
            pdf.paragraph(
                f"  {kind} #{cell.distribution_id} {cell.message_id}: "
                f"{state_label(cell.state.state, language)}",
                size=7,
            )
            for e in cell.events:
                when = format_local(local_time(e.at, zone), language, seconds=True)
                evidence = (
                    e.evidence
                    if len(e.evidence) <= EVIDENCE_SHORT
                    else (e.evidence[:EVIDENCE_SHORT] + "…")
                )
                pdf.paragraph(
                    f"    {when}  {state_label(e.kind, language)} ({e.source.value})"
                    + (f": {evidence}" if evidence else ""),
                    size=6.5,
                )


def deliveries_by_deadline(
    cells: Sequence[tuple[str, date | None]], deadline: date
) -> tuple[tuple[str, ...], tuple[tuple[str, date], ...], tuple[str, ...]]:
    """Split ``(address, local delivery day or None)`` into in time, late and not delivered."""
    in_time = tuple(a for a, d in cells if d is not None and d <= deadline)
    late = tuple((a, d) for a, d in cells if d is not None and d > deadline)
    missing = tuple(a for a, d in cells if d is None)
    return in_time, late, missing
