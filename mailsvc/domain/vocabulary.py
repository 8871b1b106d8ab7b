"""The council's vocabulary: one word per thing, in Polish and English, for pages, mail and
reports alike.

Kinds of sessions, documents and distributions and the receipt states are named here once;
the clerks' pages, the acknowledgement page, the notice rules, the mail templates and the PDF
and CSV reports all take their labels from here (templates through the ``kind_label`` and
``state_label`` globals of ``mailsvc.templating``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from mailsvc.domain.bounce_reasons import BounceReason
from mailsvc.domain.receipt_states import EventKind

LANGUAGES = ("pl", "en")
DEFAULT_LANGUAGE = "pl"

Label = Mapping[str, str]  # language -> text


def pick(entry: Label, language: str) -> str:
    """The text of ``entry`` in ``language``, English when that language is missing."""
    return entry.get(language) or entry["en"]


class Catalogue(StrEnum):
    SESSION = "session"
    DOCUMENT = "document"
    DISTRIBUTION = "distribution"


# The adjective of a session ("sesja zwyczajna" / "ordinary session" are built from it).
SESSION_KINDS: Mapping[str, Label] = {
    "ordinary": {"pl": "zwyczajna", "en": "ordinary"},
    "extraordinary": {"pl": "nadzwyczajna", "en": "extraordinary"},
    "budget": {"pl": "budżetowa", "en": "budget"},
    "constituent": {"pl": "inauguracyjna", "en": "constituent"},
}

DOCUMENT_KINDS: Mapping[str, Label] = {
    "agenda": {"pl": "porządek obrad", "en": "agenda"},
    "draft-resolution": {"pl": "projekt uchwały", "en": "draft resolution"},
    "budget-draft": {"pl": "projekt budżetu", "en": "budget draft"},
    "statute-draft": {"pl": "projekt statutu", "en": "statute draft"},
    "other": {"pl": "inne materiały", "en": "other material"},
}

DISTRIBUTION_KINDS: Mapping[str, Label] = {
    "notice": {"pl": "zawiadomienie", "en": "notice"},
    "supplement": {"pl": "uzupełnienie", "en": "supplement"},
    "date-change": {"pl": "zmiana terminu", "en": "date change"},
    "cancellation": {"pl": "odwołanie sesji", "en": "cancellation"},
}

_CATALOGUES: Mapping[Catalogue, Mapping[str, Label]] = {
    Catalogue.SESSION: SESSION_KINDS,
    Catalogue.DOCUMENT: DOCUMENT_KINDS,
    Catalogue.DISTRIBUTION: DISTRIBUTION_KINDS,
}

# Receipt states, in the order of progress (worst first).
STATE_ORDER: tuple[EventKind, ...] = (
    EventKind.FAILED,
    EventKind.QUEUED,
    EventKind.SENT,
    EventKind.DELAYED,
    EventKind.DELIVERED,
    EventKind.DELIVERED_REMOTE,
    EventKind.OPENED,
    EventKind.ACKNOWLEDGED,
)

STATE_LABELS: Mapping[EventKind, Label] = {
    EventKind.QUEUED: {"pl": "w kolejce", "en": "queued"},
    EventKind.SENT: {"pl": "wysłano", "en": "sent"},
    EventKind.DELAYED: {"pl": "opóźnione", "en": "delayed"},
    EventKind.DELIVERED: {"pl": "doręczono", "en": "delivered"},
    EventKind.DELIVERED_REMOTE: {"pl": "doręczono (zdalnie)", "en": "delivered (remote)"},
    EventKind.FAILED: {"pl": "niedoręczone", "en": "failed"},
    EventKind.OPENED: {"pl": "otwarto", "en": "opened"},
    EventKind.ACKNOWLEDGED: {"pl": "potwierdzono", "en": "acknowledged"},
    EventKind.REMINDED: {"pl": "przypomniano", "en": "reminded"},
}

STATE_MEANINGS: Mapping[EventKind, Label] = {
    EventKind.ACKNOWLEDGED: {
        "pl": "radny potwierdził odbiór, korzystając z odnośnika w wiadomości",
        "en": "the councillor confirmed receipt through the link in the message",
    },
    EventKind.OPENED: {
        "pl": "wiadomość otwarto (flaga \\Seen w skrzynce albo potwierdzenie przeczytania MDN)",
        "en": "the message was opened (\\Seen flag in the mailbox or an MDN read receipt)",
    },
    EventKind.DELIVERED: {
        "pl": "wiadomość jest w skrzynce radnego (odpowiedź serwera albo raport DSN)",
        "en": "the message is in the councillor's mailbox (server reply or DSN report)",
    },
    EventKind.DELIVERED_REMOTE: {
        "pl": "serwer pocztowy adresata poza systemem rady potwierdził doręczenie (raport DSN)",
        "en": "the recipient's mail server outside the council's system confirmed delivery "
        "(DSN report)",
    },
    EventKind.SENT: {
        "pl": "przekazano do serwera pocztowego, czeka na potwierdzenie doręczenia",
        "en": "handed to the mail server, waiting for confirmation of delivery",
    },
    EventKind.QUEUED: {
        "pl": "wiadomość czeka w kolejce na wysłanie",
        "en": "the message is waiting in the queue",
    },
    EventKind.DELAYED: {
        "pl": "chwilowy błąd, system ponawia próby doręczenia",
        "en": "a temporary failure, delivery is being retried",
    },
    EventKind.FAILED: {
        "pl": "wiadomości nie doręczono; przyczyna w kolumnie Uwagi",
        "en": "the message was not delivered; the reason is under Notes",
    },
}


def kind_label(catalogue: Catalogue | str, kind: str, language: str) -> str:
    """The label of a session, document or distribution kind; an unknown kind as it is."""
    entry = _CATALOGUES[Catalogue(catalogue)].get(kind)
    return pick(entry, language) if entry else kind


def session_kind_phrase(kind: str, language: str) -> str:
    """'sesja nadzwyczajna' / 'extraordinary session'."""
    adjective = kind_label(Catalogue.SESSION, kind, language)
    return f"{adjective} session" if language == "en" else f"sesja {adjective}"


def state_label(state: EventKind | str, language: str) -> str:
    kind = EventKind(state)
    entry = STATE_LABELS.get(kind)
    return pick(entry, language) if entry else kind.value


def state_meaning(state: EventKind, language: str) -> str:
    return pick(STATE_MEANINGS[state], language)


# Why a report says a message was not delivered (``bounce_reasons.classify``).
REASON_LABELS: Mapping[BounceReason, Label] = {
    BounceReason.USER_UNKNOWN: {"pl": "nieznany adresat", "en": "user unknown"},
    BounceReason.MAILBOX_FULL: {"pl": "skrzynka pełna", "en": "mailbox full"},
    BounceReason.HOST_UNKNOWN: {"pl": "nieznana domena", "en": "host unknown"},
    BounceReason.POLICY: {
        "pl": "odrzucone jako spam lub przez politykę",
        "en": "spam/policy block",
    },
    BounceReason.TOO_LARGE: {"pl": "wiadomość za duża", "en": "message too large"},
    BounceReason.EXPIRED: {"pl": "upłynął czas doręczania", "en": "expired"},
    BounceReason.OTHER: {"pl": "inna przyczyna", "en": "other"},
}


def reason_label(reason: BounceReason | str, language: str) -> str:
    return pick(REASON_LABELS[BounceReason(reason)], language)
