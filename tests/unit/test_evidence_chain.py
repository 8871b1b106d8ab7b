"""The receipt events' hash chain (mailsvc.domain.evidence_chain): its canonical form, its
links, and a check that names the first broken link whatever one stored value was changed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mailsvc.domain.evidence_chain import (
    GENESIS,
    BreakKind,
    ChainHead,
    EventContent,
    StoredEvent,
    canonical_content,
    content_hash,
    extend,
    link_hash,
    verify_distribution,
)

DIST = 12


def event(n: int, evidence: str = "") -> EventContent:
    return EventContent(
        recipient=f"radny{n % 3}@rada.example",
        kind=("queued", "sent", "delivered", "opened")[n % 4],
        source=("scheduler", "lmtp", "imap")[n % 3],
        at=datetime(2026, 12, 9, 8, 0) + timedelta(seconds=n, microseconds=n),
        evidence=evidence or f"evidence {n}",
    )


def stored(
    contents: Sequence[EventContent], first_id: int = 100, dist: int = DIST
) -> tuple[list[StoredEvent], ChainHead]:
    """Events as the writers store them, and the distribution's head."""
    links, head = extend(dist, ChainHead.of(None, None), contents)
    rows = [
        StoredEvent(first_id + i, c, link.seq, link.prev_hash, link.content_hash)
        for i, (c, link) in enumerate(zip(contents, links, strict=True))
    ]
    return rows, head


def test_the_canonical_content_is_sorted_compact_utf8_json() -> None:
    content = canonical_content(
        distribution_id=7,
        seq=3,
        recipient="łukasz.żółć@rada.example",
        kind="delivered",
        source="lmtp",
        at=datetime(2026, 12, 9, 8, 0, 5),
        evidence='LMTP: 250 2.0.0 "ok"\r\n\tSaved',
    )
    expected = (
        '{"at":"2026-12-09T08:00:05.000000Z","distribution":7,'
        '"evidence":"LMTP: 250 2.0.0 \\"ok\\"\\r\\n\\tSaved","kind":"delivered",'
        '"recipient":"łukasz.żółć@rada.example","seq":3,"source":"lmtp","v":1}'
    )
    assert content == expected.encode()
    assert json.loads(content)["recipient"] == "łukasz.żółć@rada.example"


@given(
    st.integers(1, 2**53),
    st.one_of(st.none(), st.integers(-1, 2**53)),
    st.text(),
    st.text(),
    st.text(),
    st.datetimes(),
    st.text(),
)
def test_the_canonical_content_is_what_json_dumps_makes_of_it(
    distribution_id: int,
    seq: int | None,
    recipient: str,
    kind: str,
    source: str,
    at: datetime,
    evidence: str,
) -> None:
    """The hand-written serialisation is json.dumps's, sorted and compact, for any text."""
    at_text = (
        f"{at.year:04d}-{at.month:02d}-{at.day:02d}T"
        f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}.{at.microsecond:06d}Z"
    )
    obj = {
        "v": 1,
        "distribution": distribution_id,
        "seq": seq,
        "recipient": recipient,
        "kind": kind,
        "source": source,
        "at": at_text,
        "evidence": evidence,
    }
    expected = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_content(
        distribution_id=distribution_id,
        seq=seq,
        recipient=recipient,
        kind=kind,
        source=source,
        at=at,
        evidence=evidence,
    ) == expected.encode("utf-8")


def test_an_aware_time_is_hashed_as_the_same_utc_moment() -> None:
    naive = event(1)._replace(at=datetime(2026, 12, 9, 8, 0))
    warsaw = naive._replace(at=datetime(2026, 12, 9, 9, 0, tzinfo=timezone(timedelta(hours=1))))
    utc = naive._replace(at=datetime(2026, 12, 9, 8, 0, tzinfo=UTC))
    assert (
        content_hash(DIST, 1, naive) == content_hash(DIST, 1, warsaw) == content_hash(DIST, 1, utc)
    )


def test_links_follow_the_documented_formula() -> None:
    first, second = event(1), event(2)
    links, head = extend(DIST, ChainHead.of(None, None), [first, second])
    c1 = hashlib.sha256(
        canonical_content(distribution_id=DIST, seq=1, **first._asdict())
    ).hexdigest()
    c2 = hashlib.sha256(
        canonical_content(distribution_id=DIST, seq=2, **second._asdict())
    ).hexdigest()
    l1 = hashlib.sha256((GENESIS + c1).encode()).hexdigest()
    l2 = hashlib.sha256((l1 + c2).encode()).hexdigest()
    assert links == [(1, GENESIS, c1), (2, l1, c2)]
    assert head == ChainHead(l2, 2) and link_hash(l1, c2) == l2


@given(st.integers(0, 12), st.integers(0, 12))
def test_appending_in_two_turns_links_as_one_turn(a: int, b: int) -> None:
    contents = [event(n) for n in range(a + b)]
    whole, head = extend(DIST, ChainHead.of(None, None), contents)
    first, middle = extend(DIST, ChainHead.of(None, None), contents[:a])
    second, end = extend(DIST, middle, contents[a:])
    assert first + second == whole and end == head


@given(st.integers(1, 15), st.integers(0, 4))
def test_a_chain_as_written_is_whole(count: int, legacy: int) -> None:
    rows, head = stored([event(n) for n in range(count)], first_id=100)
    old = [StoredEvent(10 + i, event(50 + i), None, None, None) for i in range(legacy)]
    check = verify_distribution(DIST, head, list(reversed(old + rows)))  # any order
    assert check.broken is None
    assert (check.checked, check.legacy) == (count, legacy)


def test_no_events_and_no_head_is_whole() -> None:
    check = verify_distribution(DIST, ChainHead.of(None, None), [])
    assert check.broken is None and check.checked == 0


_FIELDS: dict[str, Any] = {
    "recipient": "inny@rada.example",
    "kind": "acknowledged",
    "source": "link",
    "at": datetime(2030, 1, 1),
    "evidence": "250 2.0.0 changed",
}


@given(st.integers(2, 12), st.data(), st.sampled_from(sorted(_FIELDS)))
def test_any_edited_field_breaks_that_very_event(
    count: int, data: st.DataObject, field: str
) -> None:
    rows, head = stored([event(n) for n in range(count)])
    i = data.draw(st.integers(0, count - 1))
    edited = rows[i].content._replace(**{field: _FIELDS[field]})
    rows[i] = dataclasses.replace(rows[i], content=edited)
    broken = verify_distribution(DIST, head, rows).broken
    assert broken is not None
    assert (broken.kind, broken.event_id, broken.seq) == (BreakKind.CONTENT, rows[i].id, i + 1)
    assert broken.recipient == edited.recipient and broken.expected == rows[i].content_hash


def test_a_time_that_is_no_time_breaks_its_event() -> None:
    rows, head = stored([event(n) for n in range(3)])
    rows[1] = dataclasses.replace(rows[1], content=rows[1].content._replace(at="jutro"))
    broken = verify_distribution(DIST, head, rows).broken
    assert broken is not None and (broken.kind, broken.event_id) == (BreakKind.CONTENT, 101)


@given(st.integers(2, 12), st.data())
def test_a_deleted_event_is_named_by_its_successor(count: int, data: st.DataObject) -> None:
    rows, head = stored([event(n) for n in range(count)])
    i = data.draw(st.integers(0, count - 2))
    del rows[i]
    broken = verify_distribution(DIST, head, rows).broken
    assert broken is not None
    assert (broken.kind, broken.event_id) == (BreakKind.MISSING, 101 + i)
    assert (broken.expected, broken.found) == (str(i + 1), str(i + 2))


def test_deleted_last_events_break_the_end() -> None:
    rows, head = stored([event(n) for n in range(5)])
    check = verify_distribution(DIST, head, rows[:3])
    assert check.broken is not None
    assert (check.broken.kind, check.broken.event_id, check.broken.seq) == (
        BreakKind.MISSING,
        None,
        4,
    )
    assert (check.broken.expected, check.broken.found) == ("5", "3")
    assert check.checked == 3
    # Every event deleted, or every event's hashes erased: the head still says 5.
    assert verify_distribution(DIST, head, []).broken is not None
    erased = [StoredEvent(r.id, r.content, None, None, None) for r in rows]
    broken = verify_distribution(DIST, head, erased).broken
    assert broken is not None and broken.kind is BreakKind.MISSING


def test_a_rewritten_event_with_its_hash_recomputed_breaks_its_successor() -> None:
    rows, head = stored([event(n) for n in range(4)])
    forged = rows[1].content._replace(evidence="550 5.1.1 forged")
    rows[1] = dataclasses.replace(
        rows[1], content=forged, content_hash=content_hash(DIST, 2, forged)
    )
    broken = verify_distribution(DIST, head, rows).broken
    assert broken is not None and (broken.kind, broken.event_id) == (BreakKind.PREDECESSOR, 102)


def test_a_copied_or_moved_event_breaks_the_order() -> None:
    rows, head = stored([event(n) for n in range(4)])
    copy = dataclasses.replace(rows[1], id=200)
    broken = verify_distribution(DIST, head, [*rows, copy]).broken
    assert broken is not None and (broken.kind, broken.event_id) == (BreakKind.ORDER, 200)
    assert (broken.expected, broken.found) == ("3", "2")


def test_an_unhashed_event_inside_the_chain_is_a_break_not_legacy() -> None:
    rows, head = stored([event(n) for n in range(3)])
    added = StoredEvent(150, event(9), None, None, None)
    broken = verify_distribution(DIST, head, [*rows, added]).broken
    assert broken is not None and (broken.kind, broken.event_id) == (BreakKind.UNHASHED, 150)


def test_an_event_beyond_the_head_or_a_changed_head_breaks_the_head() -> None:
    contents = [event(n) for n in range(4)]
    rows, head = stored(contents)
    _, shorter = extend(DIST, ChainHead.of(None, None), contents[:3])
    broken = verify_distribution(DIST, shorter, rows).broken
    assert broken is not None and (broken.kind, broken.event_id) == (BreakKind.HEAD, 103)
    broken = verify_distribution(DIST, ChainHead("f" * 64, head.seq), rows).broken
    assert broken is not None and (broken.kind, broken.event_id) == (BreakKind.HEAD, None)
    assert broken.expected == head.hash


def test_an_event_moved_to_another_distribution_breaks_both() -> None:
    """Its distribution is part of its content: where it lands, it does not hash."""
    rows, head = stored([event(n) for n in range(3)])
    other_rows, other_head = stored([event(n) for n in range(3)], first_id=300, dist=DIST + 1)
    assert verify_distribution(DIST + 1, other_head, other_rows).broken is None
    moved = rows.pop(1)
    broken = verify_distribution(DIST, head, rows).broken
    assert broken is not None and (broken.kind, broken.event_id) == (BreakKind.MISSING, 102)
    broken = verify_distribution(DIST + 1, other_head, [*other_rows, moved]).broken
    assert broken is not None and (broken.kind, broken.event_id) == (BreakKind.CONTENT, 101)
