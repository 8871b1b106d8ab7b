"""Receipt events as a hash chain, one chain per distribution: the canonical form of an event,
the links written with it, and the check that finds the first broken link.

Every event of a distribution gets the next number of its chain (``seq``, from 1), the SHA-256
of its canonical content and the hash of its predecessor's link; the distribution keeps the
hash of its last link (the chain head):

    content = canonical_content(event)        # bytes, see below
    content_hash = sha256(content).hex()
    link = sha256((prev_hash + content_hash).encode()).hex()   # the two hex strings, joined
    prev_hash of event 1 = GENESIS (64 zeros); prev_hash of event n + 1 = link of event n

The canonical content is the JSON object

    {"at": "2026-12-09T08:00:00.123456Z", "distribution": 12, "evidence": "…",
     "kind": "delivered", "recipient": "anna.nowak@rada.miasto.example", "seq": 7,
     "source": "lmtp", "v": 1}

with the keys sorted, no whitespace, strings as they are (only ``"``, ``\\`` and control
characters escaped, nothing else), UTF-8: the RFC 8785 (JCS) serialisation of that object, so
any JCS library reproduces it. ``at`` is the stored time (UTC) with six decimals; ``recipient``
the address as stored in the distribution's recipient row; ``evidence`` the text as stored
(already cut to its maximum length). The event's database id is not part of it: ids are the
database's, the chain's order is ``seq``.

Pure: no I/O. Storage (``mailsvc.storage.chain``) reads and writes the rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from json.encoder import encode_basestring as _string
from typing import NamedTuple

GENESIS = "0" * 64
CANONICAL_VERSION = 1


def utc_naive(at: datetime) -> datetime:
    """Naive UTC, as times are stored (an aware time converted, a naive one taken as UTC)."""
    if at.tzinfo is None:
        return at
    return at.astimezone(UTC).replace(tzinfo=None)


def format_at(at: datetime | str) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``; a stored value that was not a time (edited by hand)
    as it is, so it never matches the hash of a real time."""
    if isinstance(at, str):
        return at
    return utc_naive(at).isoformat(timespec="microseconds") + "Z"


def canonical_content(
    *,
    distribution_id: int,
    seq: int | None,
    recipient: str,
    kind: str,
    source: str,
    at: datetime | str,
    evidence: str,
) -> bytes:
    """The bytes an event's content hash is taken of (see the module's documentation): what
    ``json.dumps(…, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` makes of the
    object, written out key by key in that order (json.dumps costs three times as much, and
    this runs for every event written); the strings escaped by json's own escaper."""
    return (
        '{"at":'
        + _string(format_at(at))
        + ',"distribution":'
        + str(int(distribution_id))
        + ',"evidence":'
        + _string(evidence)
        + ',"kind":'
        + _string(str(kind))
        + ',"recipient":'
        + _string(recipient)
        + ',"seq":'
        + ("null" if seq is None else str(int(seq)))
        + ',"source":'
        + _string(str(source))
        + ',"v":'
        + str(CANONICAL_VERSION)
        + "}"
    ).encode()


def content_hash(distribution_id: int, seq: int | None, event: EventContent) -> str:
    return hashlib.sha256(
        canonical_content(
            distribution_id=distribution_id,
            seq=seq,
            recipient=event.recipient,
            kind=event.kind,
            source=event.source,
            at=event.at,
            evidence=event.evidence,
        )
    ).hexdigest()


def link_hash(prev_hash: str, content: str) -> str:
    """The hash of one link: its predecessor's link hash followed by its content hash."""
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


class EventContent(NamedTuple):
    """What an event says (the canonical content but for its place in the chain). Tuples, not
    dataclasses, for what is made per event written: a third of the cost to build."""

    recipient: str
    kind: str
    source: str
    at: datetime | str  # naive UTC; a str only when a stored value is not a time
    evidence: str


@dataclass(frozen=True)
class ChainHead:
    """Where a distribution's chain ends: the last link's hash and number. ``seq`` 0 (hash
    None): no event chained yet."""

    hash: str | None
    seq: int

    @classmethod
    def of(cls, hash_: str | None, seq: int | None) -> ChainHead:
        return cls(hash_, seq or 0)


class Link(NamedTuple):
    """What is stored with one new event."""

    seq: int
    prev_hash: str
    content_hash: str


def extend(
    distribution_id: int, head: ChainHead, events: Iterable[EventContent]
) -> tuple[list[Link], ChainHead]:
    """The links of ``events`` appended, in order, after ``head``; and the new head."""
    prev = head.hash or GENESIS
    seq = head.seq
    links: list[Link] = []
    for event in events:
        seq += 1
        content = content_hash(distribution_id, seq, event)
        links.append(Link(seq, prev, content))
        prev = link_hash(prev, content)
    if not links:
        return links, head
    return links, ChainHead(prev, seq)


# -- verification ---------------------------------------------------------------------------


class BreakKind(StrEnum):
    CONTENT = "content"  # the event's content no longer matches its content hash
    MISSING = "missing"  # events before this one (or after the last one) are gone
    ORDER = "order"  # a number repeated or out of turn: an event added or moved
    PREDECESSOR = "predecessor"  # its predecessor's hash is not the link before it
    UNHASHED = "unhashed"  # an event without hashes after the chain began
    HEAD = "head"  # the distribution's recorded head disagrees with its last event


@dataclass(frozen=True)
class StoredEvent:
    """One receipt event as read back, with what was stored for the chain (None: nothing)."""

    id: int
    content: EventContent
    seq: int | None
    prev_hash: str | None
    content_hash: str | None

    @property
    def hashed(self) -> bool:
        return not (self.seq is None and self.prev_hash is None and self.content_hash is None)


@dataclass(frozen=True)
class Break:
    """The first broken link of a distribution's chain. ``event_id`` None: the break is at the
    end of the chain (``seq``: the first missing number, if events are missing).
    ``expected``/``found``: hashes or chain numbers, per ``kind``:

    - CONTENT: the stored content hash / the hash of the content as it is now;
    - MISSING: the event's expected number / its number (at the end: the head's / the last);
    - ORDER: the expected number / the event's number (repeated or going back);
    - PREDECESSOR: the link hash of the event before / the predecessor hash stored;
    - UNHASHED: "hashes" / "none";
    - HEAD: the head's number / the event's (an event beyond the head), or at the end the
      last link's hash / the head's hash.
    """

    distribution_id: int
    kind: BreakKind
    event_id: int | None
    seq: int | None
    recipient: str | None
    event_kind: str | None
    expected: str
    found: str


@dataclass(frozen=True)
class DistributionCheck:
    distribution_id: int
    checked: int  # chained events whose links held, up to the break if any
    legacy: int  # events from before the chain existed (no hashes): not verifiable
    head: ChainHead
    broken: Break | None


def verify_distribution(
    distribution_id: int, head: ChainHead, events: Sequence[StoredEvent]
) -> DistributionCheck:
    """Recompute a distribution's chain from its stored events (any order) and head.

    Events written before the chain existed (an older version: no hashes at all) come before
    the first hashed event and are counted as legacy, not as breaks. The chain itself must run
    1, 2, … ``head.seq`` without gaps, each event's content must hash to its stored hash, each
    must name its predecessor's link, and the last link must be the head."""
    hashed = sorted((e for e in events if e.hashed), key=lambda e: (_seq_key(e.seq), e.id))
    first_hashed = min((e.id for e in hashed), default=None)
    legacy = 0
    for e in sorted(events, key=lambda e: e.id):
        if e.hashed:
            continue
        if first_hashed is None or e.id < first_hashed:
            legacy += 1
            continue
        broken = _break(distribution_id, BreakKind.UNHASHED, e, expected="hashes", found="none")
        return DistributionCheck(distribution_id, 0, legacy, head, broken)

    def stop(broken: Break, checked: int) -> DistributionCheck:
        return DistributionCheck(distribution_id, checked, legacy, head, broken)

    prev = GENESIS
    expected_seq = 1
    for checked, e in enumerate(hashed):
        if e.seq is None or e.seq < expected_seq:
            found = "none" if e.seq is None else str(e.seq)
            return stop(
                _break(distribution_id, BreakKind.ORDER, e, str(expected_seq), found), checked
            )
        if e.seq > expected_seq:
            return stop(
                _break(distribution_id, BreakKind.MISSING, e, str(expected_seq), str(e.seq)),
                checked,
            )
        if e.seq > head.seq:
            return stop(
                _break(distribution_id, BreakKind.HEAD, e, str(head.seq), str(e.seq)), checked
            )
        recomputed = content_hash(distribution_id, e.seq, e.content)
        if e.content_hash != recomputed:
            return stop(
                _break(distribution_id, BreakKind.CONTENT, e, e.content_hash or "none", recomputed),
                checked,
            )
        if e.prev_hash != prev:
            return stop(
                _break(distribution_id, BreakKind.PREDECESSOR, e, prev, e.prev_hash or "none"),
                checked,
            )
        prev = link_hash(prev, recomputed)
        expected_seq += 1
    last = expected_seq - 1
    if head.seq > last:
        # The last events are gone: the break is at the first missing number.
        broken = Break(
            distribution_id, BreakKind.MISSING, None, last + 1, None, None, str(head.seq), str(last)
        )
        return stop(broken, len(hashed))
    if last and head.hash != prev:
        broken = Break(
            distribution_id, BreakKind.HEAD, None, None, None, None, prev, head.hash or "none"
        )
        return stop(broken, len(hashed))
    return DistributionCheck(distribution_id, len(hashed), legacy, head, None)


def _seq_key(seq: int | None) -> int:
    return -1 if seq is None else seq


def _break(
    distribution_id: int, kind: BreakKind, event: StoredEvent, expected: str, found: str
) -> Break:
    return Break(
        distribution_id,
        kind,
        event.id,
        event.seq,
        event.content.recipient,
        event.content.kind,
        expected,
        found,
    )
