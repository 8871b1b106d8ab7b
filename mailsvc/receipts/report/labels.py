"""The report's own words: headings, column titles and notes in Polish and English.

States and kinds are not here: their labels come from :mod:`mailsvc.domain.vocabulary`, the
one vocabulary the clerk pages, the acknowledgement page and the mail use too, so a state reads
the same on the screen and in the annexed PDF.
"""

from __future__ import annotations

from mailsvc.domain.receipt_states import EventKind
from mailsvc.domain.vocabulary import Catalogue, kind_label, pick

# The order events are listed in (columns of the CSV, keys of the JSON "times").
EVENT_ORDER = (
    EventKind.QUEUED,
    EventKind.SENT,
    EventKind.DELAYED,
    EventKind.DELIVERED,
    EventKind.DELIVERED_REMOTE,
    EventKind.FAILED,
    EventKind.OPENED,
    EventKind.ACKNOWLEDGED,
    EventKind.REMINDED,
)
# The states derive_state can produce, in the order the summary and the legend list them.
STATE_ORDER = (
    EventKind.ACKNOWLEDGED,
    EventKind.OPENED,
    EventKind.DELIVERED_REMOTE,
    EventKind.DELIVERED,
    EventKind.SENT,
    EventKind.QUEUED,
    EventKind.DELAYED,
    EventKind.FAILED,
)


LABELS: dict[str, dict[str, str]] = {
    "title": {
        "pl": "Potwierdzenia doręczenia dokumentów sesji",
        "en": "Receipts of session documents",
    },
    "session": {"pl": "Sesja nr {number} ({kind})", "en": "Session {number} ({kind})"},
    "when_where": {"pl": "Termin: {at}, miejsce: {place}", "en": "Date: {at}, place: {place}"},
    "generated": {
        "pl": "Wygenerowano: {at}. Wszystkie godziny: czas lokalny {tz}.",
        "en": "Generated: {at}. All times are local time {tz}.",
    },
    "generated_short": {"pl": "Wygenerowano {at}", "en": "Generated {at}"},
    "documents": {"pl": "Dokumenty", "en": "Documents"},
    "distributions": {"pl": "Wysyłki", "en": "Distributions"},
    "summary": {
        "pl": "Podsumowanie (radni × wysyłki)",
        "en": "Summary (councillors × distributions)",
    },
    "legend": {"pl": "Legenda", "en": "Legend"},
    "matrix": {"pl": "Radni i wysyłki", "en": "Councillors and distributions"},
    "no": {"pl": "Lp.", "en": "No."},
    "name": {"pl": "Nazwa pliku", "en": "File name"},
    "agenda_item": {"pl": "Punkt porządku obrad", "en": "Agenda item"},
    "pages": {"pl": "Stron", "en": "Pages"},
    "size": {"pl": "Rozmiar [B]", "en": "Size [B]"},
    "sha256": {"pl": "SHA-256", "en": "SHA-256"},
    "distribution": {"pl": "Wysyłka", "en": "Distribution"},
    "kind": {"pl": "Rodzaj", "en": "Kind"},
    "scheduled": {"pl": "Zaplanowano", "en": "Scheduled"},
    "sent": {"pl": "Wysłano", "en": "Sent"},
    "late": {"pl": "Po terminie", "en": "Late"},
    "yes": {"pl": "tak", "en": "yes"},
    "no_": {"pl": "nie", "en": "no"},
    "override": {"pl": "Uzasadnienie odstępstwa", "en": "Override reason"},
    "carried": {"pl": "Dokumenty (Lp.)", "en": "Documents (No.)"},
    "councillor": {"pl": "Radny/Radna", "en": "Councillor"},
    "address": {"pl": "Adres", "en": "Address"},
    "state": {"pl": "Stan", "en": "State"},
    "state_code": {"pl": "Kod stanu", "en": "State code"},
    "notes": {"pl": "Uwagi", "en": "Notes"},
    "total": {"pl": "Razem", "en": "Total"},
    "councillors": {"pl": "Radnych: {count}", "en": "Councillors: {count}"},
    "not_sent": {"pl": "brak wysyłki", "en": "not sent"},
    "earlier_failure": {"pl": "wcześniejszy błąd", "en": "earlier failure"},
    "local": {"pl": "{label} (czas lokalny)", "en": "{label} (local time)"},
    "utc": {"pl": "{label} (UTC)", "en": "{label} (UTC)"},
    "session_col": {"pl": "Sesja", "en": "Session"},
    "distribution_id": {"pl": "Wysyłka (nr)", "en": "Distribution (no.)"},
    "distribution_kind": {"pl": "Rodzaj wysyłki", "en": "Distribution kind"},
    "documents_sha": {"pl": "Dokumenty (SHA-256)", "en": "Documents (SHA-256)"},
    "documents_names": {"pl": "Dokumenty (nazwy)", "en": "Documents (names)"},
    "whole_session": {"pl": "cała sesja", "en": "whole session"},
    "signature": {
        "pl": "Sporządził(a): ........................................   "
        "Data: ....................   Podpis: ........................................",
        "en": "Prepared by: ........................................   "
        "Date: ....................   Signature: ........................................",
    },
}


def label(language: str, key: str, **values: object) -> str:
    return pick(LABELS[key], language).format(**values)


def distribution_kind_label(kind: str, language: str) -> str:
    return kind_label(Catalogue.DISTRIBUTION, kind, language)


def session_kind_label(kind: str, language: str) -> str:
    return kind_label(Catalogue.SESSION, kind, language)
