"""Rendering distribution messages: one personal head per councillor, attachments shared.

Every value a clerk typed (session number, place, agenda titles, note, file names) reaches the
headers only through :func:`mailsvc.compose.build_message` (control characters removed, RFC 2047
encoding) or the email package's RFC 2231 parameter encoding, and the bodies only through
jinja2 (HTML autoescaped) and quoted-printable: no value can add a header or break the MIME
structure. The documents are encoded once per distribution into part files
(:mod:`mailsvc.relay.delivery.body`); a head is a few kilobytes whatever the pack size.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import MIMEPart
from email.utils import format_datetime, formatdate
from pathlib import Path
from typing import Any

from mailsvc import templating
from mailsvc.compose import (
    alternative_body,
    build_message,
    check_address,
    clean_header_text,
    council_context,
    header_field,
    message_id_field,
)
from mailsvc.config import Settings
from mailsvc.domain.wording import format_pages, format_size
from mailsvc.relay.delivery.body import encode_part

_SUBJECT = {
    "pl": {
        "notice": "Zawiadomienie o sesji {number} {council_genitive} ({when})",
        "supplement": "Uzupełnienie materiałów na sesję {number} ({when})",
        "date-change": "Zmiana terminu sesji {number}: {when}",
        "cancellation": "Odwołanie sesji {number} ({when})",
        "reminder": "Przypomnienie: potwierdzenie odbioru materiałów na sesję {number}",
        "summary": "Sesja {number}: brak potwierdzeń ({count}) — przypomnienie wysłane",
    },
    "en": {
        "notice": "Notice of session {number} of {council} ({when})",
        "supplement": "Supplementary documents for session {number} ({when})",
        "date-change": "New date of session {number}: {when}",
        "cancellation": "Session {number} cancelled ({when})",
        "reminder": "Reminder: please confirm the documents for session {number}",
        "summary": "Session {number}: {count} not confirmed — reminder sent",
    },
}
_DAYS_PL = ("poniedziałek", "wtorek", "środa", "czwartek", "piątek", "sobota", "niedziela")
_DAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def when(moment: datetime, language: str) -> str:
    """``datetime(2026, 12, 17, 10, 0)`` -> "czwartek, 17 grudnia 2026, godz. 10:00"."""
    day = templating.format_date(moment.date(), language)
    if language == "en":
        return f"{_DAYS_EN[moment.weekday()]}, {day}, {moment:%H:%M}"
    return f"{_DAYS_PL[moment.weekday()]}, {day}, godz. {moment:%H:%M}"


@dataclass(frozen=True)
class PackDocument:
    """A document as it goes out: stored file, name, and where it belongs."""

    id: int
    path: Path
    filename: str
    media_type: str
    size: int
    pages: int | None
    sha256: str
    agenda_position: int | None


@dataclass(frozen=True)
class SessionFacts:
    number: str
    kind: str
    starts_at: datetime  # local
    place: str
    agenda: tuple[tuple[int, str], ...]  # (position, title)


@dataclass(frozen=True)
class Pack:
    """What every recipient of one distribution gets in common."""

    distribution_id: int
    kind: str
    session: SessionFacts
    note: str
    documents: tuple[PackDocument, ...]
    linked: bool  # documents as download links instead of attachments
    part_names: tuple[str, ...]  # encoded attachment parts (empty when linked)
    boundary: str


def attachment_headers(filename: str, media_type: str) -> bytes:
    """The MIME headers of one attachment part (RFC 2231 for non-ASCII names), CRLF lines."""
    maintype, _, subtype = media_type.partition("/")
    part = MIMEPart(policy=policy.SMTP)
    part.set_content(
        b"",
        maintype=maintype or "application",
        subtype=subtype or "octet-stream",
        filename=clean_header_text(filename) or "document",
    )
    raw = part.as_bytes()
    headers, _, _ = raw.partition(b"\r\n\r\n")
    return headers + b"\r\n"


def prepare_pack(
    settings: Settings,
    *,
    distribution_id: int,
    kind: str,
    session: SessionFacts,
    note: str,
    documents: Sequence[PackDocument],
) -> Pack:
    """Decide attachments or links and encode the attachment parts once (fsync'd files)."""
    total = sum(d.size for d in documents)
    linked = total > settings.distribution.attach_max_bytes
    names: list[str] = []
    if documents and not linked:
        for doc in documents:
            names.append(
                encode_part(
                    doc.path, attachment_headers(doc.filename, doc.media_type), settings.var_dir
                )
            )
    return Pack(
        distribution_id,
        kind,
        session,
        note,
        tuple(documents),
        linked,
        tuple(names),
        f"=_mailsvc_{secrets.token_hex(12)}",
    )


def _doc_context(doc: PackDocument, language: str, url: str | None) -> dict[str, Any]:
    description = ", ".join(
        x
        for x in (
            format_pages(doc.pages, language, sep=" ") if doc.pages is not None else "",
            format_size(doc.size, language),
        )
        if x
    )
    return {
        "filename": clean_header_text(doc.filename),
        "description": description,
        "sha256": doc.sha256,
        "url": url,
    }


def subject(settings: Settings, kind: str, facts: SessionFacts, *, count: int = 0) -> str:
    language = settings.language
    table = _SUBJECT.get(language, _SUBJECT["pl"])
    return table[kind].format(
        number=facts.number,
        when=templating.format_date(facts.starts_at.date(), language),
        count=count,
        **council_context(settings),
    )


class HeadTemplate:
    """Renders the personal head of each recipient of one distribution.

    What every recipient shares is prepared once: the From, Subject and fixed fields folded by
    the email package, the template context, the documents' descriptions and the boundaries.
    Per recipient only the To field (RFC 2047 for diacritics), the ids, the links and the two
    bodies are written. The result parses exactly like :func:`mailsvc.compose.build_message`'s
    message (a unit test holds the two against each other).
    """

    def __init__(self, settings: Settings, pack: Pack) -> None:
        self.settings = settings
        self.pack = pack
        language = settings.language
        facts = pack.session
        self._docs = [_doc_context(d, language, None) for d in pack.documents]
        title = subject(settings, pack.kind, facts)
        self._context: dict[str, Any] = {
            **council_context(settings),
            "subject": title,
            "kind": pack.kind,
            "note": pack.note,
            "session": {
                "number": facts.number,
                "when": when(facts.starts_at, language),
                "place": facts.place,
            },
            "links": pack.linked,
        }
        self._shared = b"".join(
            [
                header_field("From", (settings.council.name, settings.office_address)),
                header_field("Subject", title),
                b"MIME-Version: 1.0\r\n",
                b"Auto-Submitted: auto-generated\r\n",
                header_field("Content-Language", language),
            ]
        )
        self._alternative = f"=_alt_{secrets.token_hex(12)}"

    def _documents(self, download_urls: Mapping[int, str]) -> dict[str, Any]:
        docs = self._docs
        if self.pack.linked:
            docs = [
                {**ctx, "url": download_urls.get(doc.id)}
                for doc, ctx in zip(self.pack.documents, self._docs, strict=True)
            ]
        by_position: dict[int, list[dict[str, Any]]] = {}
        loose: list[dict[str, Any]] = []
        for doc, ctx in zip(self.pack.documents, docs, strict=True):
            if doc.agenda_position is None:
                loose.append(ctx)
            else:
                by_position.setdefault(doc.agenda_position, []).append(ctx)
        return {
            "agenda": [
                {"position": pos, "title": text, "documents": by_position.get(pos, [])}
                for pos, text in self.pack.session.agenda
            ],
            "loose_documents": loose,
            "documents": docs,
        }

    def render(
        self,
        *,
        to: tuple[str, str],
        message_id: str,
        return_path: str,
        ack_url: str,
        download_urls: Mapping[int, str],
        links_valid_until: str,
        references: Sequence[str] = (),
        date: datetime | None = None,
    ) -> bytes:
        """The personal part of one recipient's message. With attachments it ends with the
        first ``--boundary`` line; :class:`mailsvc.relay.delivery.body.PartedBody` appends the
        parts."""
        settings = self.settings
        language = settings.language
        context = {
            **self._context,
            **self._documents(download_urls),
            "links_valid_until": links_valid_until,
            "ack_url": ack_url,
        }
        content, body = alternative_body(
            templating.render("mail/distribution.txt", language, **context),
            templating.render("mail/distribution.html", language, **context),
            self._alternative,
        )
        fields = [
            self._shared,
            header_field("To", to),
            f"Date: {format_datetime(date) if date else formatdate(localtime=True)}\r\n".encode(
                "ascii"
            ),
            message_id_field("Message-ID", [message_id]),
        ]
        if settings.distribution.request_mdn:
            notify = check_address("return_path", return_path)
            fields.append(f"Disposition-Notification-To: {notify}\r\n".encode("ascii"))
        if references:
            fields.append(message_id_field("In-Reply-To", [references[-1]]))
            fields.append(message_id_field("References", references))
        if not self.pack.part_names:
            return b"".join([*fields, content, b"\r\n", body])
        mixed = self.pack.boundary.encode("ascii")
        return b"".join(
            [
                *fields,
                b'Content-Type: multipart/mixed; boundary="' + mixed + b'"\r\n\r\n',
                b"--" + mixed + b"\r\n",
                content,
                b"\r\n",
                body,
                b"--" + mixed + b"\r\n",
            ]
        )


def render_head(
    settings: Settings,
    pack: Pack,
    *,
    to: tuple[str, str],
    message_id: str,
    return_path: str,
    ack_url: str,
    download_urls: Mapping[int, str],
    links_valid_until: str,
    references: Sequence[str] = (),
    date: datetime | None = None,
) -> bytes:
    """One recipient's head (see :class:`HeadTemplate`, which a distribution makes once)."""
    return HeadTemplate(settings, pack).render(
        to=to,
        message_id=message_id,
        return_path=return_path,
        ack_url=ack_url,
        download_urls=download_urls,
        links_valid_until=links_valid_until,
        references=references,
        date=date,
    )


def render_reminder(
    settings: Settings,
    facts: SessionFacts,
    *,
    to: tuple[str, str],
    ack_url: str,
    sent_at: str,
    references: Sequence[str],
) -> bytes:
    language = settings.language
    context = {
        **council_context(settings),
        "session": {
            "number": facts.number,
            "when": when(facts.starts_at, language),
            "place": facts.place,
        },
        "ack_url": ack_url,
        "sent_at": sent_at,
    }
    msg = build_message(
        from_addr=(settings.council.name, settings.office_address),
        to=to,
        subject=subject(settings, "reminder", facts),
        text=templating.render("mail/reminder.txt", language, **context),
        headers={"Auto-Submitted": "auto-generated", "Content-Language": language},
        message_id_domain=settings.domain,
    )
    if references:
        msg["In-Reply-To"] = references[-1]
        msg["References"] = " ".join(references)
    return msg.as_bytes()


def render_summary(
    settings: Settings,
    facts: SessionFacts,
    *,
    round_name: str,
    sent_at: str,
    names: Sequence[str],
    print_list_pdf: bytes | None,
) -> bytes:
    """The clerk's summary after a reminder round, with the print list attached."""
    language = settings.language
    context = {
        **council_context(settings),
        "session": {
            "number": facts.number,
            "when": when(facts.starts_at, language),
            "place": facts.place,
        },
        "round": round_name,
        "sent_at": sent_at,
        "names": list(names),
    }
    msg = build_message(
        from_addr=(settings.council.name, settings.office_address),
        to=("", settings.office_address),
        subject=subject(settings, "summary", facts, count=len(names)),
        text=templating.render("mail/reminder_summary.txt", language, **context),
        headers={"Auto-Submitted": "auto-generated", "Content-Language": language},
        message_id_domain=settings.domain,
    )
    if print_list_pdf is not None:
        safe = "".join(c if c.isalnum() else "-" for c in facts.number)
        msg.add_attachment(
            print_list_pdf,
            maintype="application",
            subtype="pdf",
            filename=f"lista-do-wydruku-{safe}.pdf",
        )
    return msg.as_bytes()
