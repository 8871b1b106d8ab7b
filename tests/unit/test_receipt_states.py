"""How receipt events rank into one state, with the remote delivery a smarthost's DSN proves."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from mailsvc.domain.receipt_states import EventKind, EventSource, ReceiptEvent, derive_state
from mailsvc.domain.vocabulary import LANGUAGES, STATE_LABELS, STATE_ORDER, state_meaning
from mailsvc.receipts.report.labels import EVENT_ORDER
from mailsvc.receipts.report.labels import STATE_ORDER as REPORT_STATE_ORDER

T0 = datetime(2026, 3, 5, 9, 0)
K = EventKind


def events(*kinds: EventKind) -> list[ReceiptEvent]:
    """One event per kind, a minute apart, in the order given."""
    return [
        ReceiptEvent(kind, T0 + timedelta(minutes=i), EventSource.SMTP)
        for i, kind in enumerate(kinds)
    ]


@pytest.mark.parametrize(
    ("history", "state"),
    [
        # The smarthost took the copy (a second "sent", its 250): handed over, nothing more.
        ((K.QUEUED, K.SENT, K.SENT), K.SENT),
        # ... and the remote end's success DSN proves delivery there.
        ((K.QUEUED, K.SENT, K.SENT, K.DELIVERED_REMOTE), K.DELIVERED_REMOTE),
        # What the councillor did ranks above any delivery report.
        ((K.QUEUED, K.SENT, K.DELIVERED_REMOTE, K.OPENED), K.OPENED),
        ((K.QUEUED, K.SENT, K.DELIVERED_REMOTE, K.ACKNOWLEDGED), K.ACKNOWLEDGED),
        ((K.QUEUED, K.SENT, K.OPENED, K.DELIVERED_REMOTE), K.OPENED),
        # Old records counted the smarthost's 250 as delivered: the DSN is the stronger word.
        ((K.QUEUED, K.SENT, K.DELIVERED, K.DELIVERED_REMOTE), K.DELIVERED_REMOTE),
        ((K.QUEUED, K.SENT, K.DELIVERED_REMOTE, K.DELIVERED), K.DELIVERED_REMOTE),
        # A failure after the remote delivery (a late DSN from further on) shows as failed ...
        ((K.QUEUED, K.SENT, K.DELIVERED_REMOTE, K.FAILED), K.FAILED),
        # ... a success after a failure shows the success ...
        ((K.QUEUED, K.SENT, K.FAILED, K.DELIVERED_REMOTE), K.DELIVERED_REMOTE),
        # ... and reading it overrides a failure, as for local delivery.
        ((K.QUEUED, K.SENT, K.DELIVERED_REMOTE, K.FAILED, K.OPENED), K.OPENED),
        # A delay ends when the smarthost takes the copy after all ...
        ((K.QUEUED, K.SENT, K.DELAYED, K.SENT), K.SENT),
        ((K.QUEUED, K.SENT, K.DELAYED, K.SENT, K.DELIVERED_REMOTE), K.DELIVERED_REMOTE),
        # ... and a delay the remote end reports after taking it is a delay again.
        ((K.QUEUED, K.SENT, K.DELAYED, K.SENT, K.DELAYED), K.DELAYED),
        # Local delivery as before: sent, a temporary failure, then LMTP's 250.
        ((K.QUEUED, K.SENT, K.DELAYED), K.DELAYED),
        ((K.QUEUED, K.SENT, K.DELAYED, K.DELIVERED), K.DELIVERED),
        ((K.QUEUED, K.SENT, K.DELIVERED, K.FAILED), K.FAILED),
    ],
)
def test_state_of_a_history(history: tuple[EventKind, ...], state: EventKind) -> None:
    assert derive_state(events(*history)).state is state


def test_order_of_arrival_does_not_matter() -> None:
    history = events(K.QUEUED, K.SENT, K.DELAYED, K.SENT, K.DELIVERED_REMOTE)
    assert derive_state(reversed(history)).state is K.DELIVERED_REMOTE


def test_a_delay_and_the_handover_at_the_same_instant_stays_a_delay() -> None:
    # The first attempt's "sent" and its 4xx can carry one timestamp: still being retried.
    history = [
        ReceiptEvent(K.SENT, T0, EventSource.SMTP),
        ReceiptEvent(K.DELAYED, T0, EventSource.SMTP),
    ]
    assert derive_state(history).state is K.DELAYED


def test_first_times_keep_the_remote_delivery() -> None:
    history = events(K.QUEUED, K.SENT, K.SENT, K.DELIVERED_REMOTE)
    state = derive_state(history)
    assert state.time_of(K.DELIVERED_REMOTE) == T0 + timedelta(minutes=3)
    assert state.time_of(K.SENT) == T0 + timedelta(minutes=1)  # the attempt, not the 250
    assert state.time_of(K.DELIVERED) is None


def test_remote_delivery_ranks_between_delivered_and_opened_everywhere() -> None:
    # The clerk page ranks document cells by vocabulary.STATE_ORDER (worst first); the reports
    # list states best first.
    assert STATE_ORDER.index(K.DELIVERED) + 1 == STATE_ORDER.index(K.DELIVERED_REMOTE)
    assert STATE_ORDER.index(K.DELIVERED_REMOTE) + 1 == STATE_ORDER.index(K.OPENED)
    assert REPORT_STATE_ORDER.index(K.DELIVERED_REMOTE) == REPORT_STATE_ORDER.index(K.OPENED) + 1
    assert set(REPORT_STATE_ORDER) == set(STATE_ORDER)
    assert K.DELIVERED_REMOTE in EVENT_ORDER


def test_remote_delivery_has_its_own_words_in_every_language() -> None:
    for language in LANGUAGES:
        remote = STATE_LABELS[K.DELIVERED_REMOTE][language]
        assert remote and remote != STATE_LABELS[K.DELIVERED][language]
        assert state_meaning(K.DELIVERED_REMOTE, language)
    assert STATE_LABELS[K.DELIVERED_REMOTE] == {
        "pl": "doręczono (zdalnie)",
        "en": "delivered (remote)",
    }


def test_the_kind_fits_the_event_column() -> None:
    assert len(K.DELIVERED_REMOTE.value) <= 16  # receipt_events.kind is String(16)
