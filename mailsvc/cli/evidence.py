"""`mailsvc evidence …`: the receipt evidence of a session. ``verify SESSION`` recomputes the
hash chain of every distribution's receipt events (mailsvc.domain.evidence_chain); ``export
SESSION --output FILE.pdf`` writes the signed evidence pack (mailsvc.receipts.evidence).

Each action is one entry of ``_ACTIONS`` and one sub-parser in ``add_parser``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.app import open_database, open_parts
from mailsvc.config import Settings
from mailsvc.domain.evidence_chain import Break, BreakKind
from mailsvc.domain.wording import count_of
from mailsvc.errors import MailsvcError
from mailsvc.receipts.evidence.verify import CheckedDistribution, SessionCheck, verify_session
from mailsvc.tmpfiles import writer_tmp

# Exit statuses of `evidence verify`.
WHOLE, BROKEN, NO_SESSION = 0, 1, 2

_TEXT: dict[str, dict[str, str]] = {
    "no_session": {"pl": "Nie ma sesji {session}.", "en": "No session {session}."},
    "exported": {
        "pl": "Zapisano podpisany pakiet dowodowy: {path} ({size} B). Sprawdzenie: pdfsig {path}",
        "en": "Wrote the signed evidence pack: {path} ({size} B). To check it: pdfsig {path}",
    },
    "whole": {
        "pl": "Sesja {session}: łańcuch dowodów jest nienaruszony ({distributions}, "
        "sprawdzono {events}).",
        "en": "Session {session}: the evidence chain is whole ({distributions}, {events} checked).",
    },
    "broken": {
        "pl": "Sesja {session}: łańcuch dowodów jest PRZERWANY.",
        "en": "Session {session}: the evidence chain is BROKEN.",
    },
    "distribution": {
        "pl": "  rozsyłka #{id} ({kind}): sprawdzono {events}, głowa łańcucha {head}",
        "en": "  distribution #{id} ({kind}): {events} checked, chain head {head}",
    },
    "distribution_broken": {
        "pl": "  rozsyłka #{id} ({kind}): PRZERWANA (przed przerwą sprawdzono {events})",
        "en": "  distribution #{id} ({kind}): BROKEN after {events}",
    },
    "no_head": {"pl": "(brak)", "en": "(none)"},
    "legacy": {
        "pl": "Uwaga: {events} zapisano przed wprowadzeniem łańcucha (bez skrótów): "
        "tych nie da się sprawdzić.",
        "en": "Note: {events} written before the chain existed (no hashes): "
        "these cannot be verified.",
    },
    "at_event": {
        "pl": "Pierwsze zerwane ogniwo: rozsyłka #{id} ({kind}), zdarzenie #{event} "
        "(nr {seq} w łańcuchu, {event_kind}), adresat {recipient}:",
        "en": "First broken link: distribution #{id} ({kind}), event #{event} "
        "(no. {seq} in the chain, {event_kind}), recipient {recipient}:",
    },
    "at_end": {
        "pl": "Pierwsze zerwane ogniwo: rozsyłka #{id} ({kind}), koniec łańcucha:",
        "en": "First broken link: distribution #{id} ({kind}), the end of the chain:",
    },
    "no_number": {"pl": "bez numeru", "en": "none"},
    BreakKind.CONTENT: {
        "pl": "  treść zmieniona po zapisie: zapisany skrót treści {expected}, "
        "obecna treść daje {found}",
        "en": "  content changed after it was written: stored content hash {expected}, "
        "the content now hashes to {found}",
    },
    BreakKind.MISSING: {
        "pl": "  brak poprzednika: oczekiwano zdarzenia nr {expected}, następne jest nr {found} "
        "(zdarzenia usunięto)",
        "en": "  predecessor missing: expected event no. {expected}, the next one is no. {found} "
        "(events were deleted)",
    },
    "missing_end": {
        "pl": "  brak ostatnich zdarzeń: łańcuch kończył się na nr {expected}, zostały "
        "zdarzenia do nr {found} (zdarzenia usunięto)",
        "en": "  the last events are missing: the chain ended at no. {expected}, events "
        "remain up to no. {found} (events were deleted)",
    },
    BreakKind.ORDER: {
        "pl": "  kolejność: oczekiwano nr {expected}, zdarzenie ma nr {found} (numer powtórzony "
        "lub cofnięty: zdarzenie dopisane lub przeniesione)",
        "en": "  order: expected no. {expected}, the event has no. {found} (a number repeated "
        "or going back: an event added or moved)",
    },
    BreakKind.PREDECESSOR: {
        "pl": "  skrót poprzednika się nie zgadza: oczekiwano {expected}, zapisano {found} "
        "(wcześniejsze zdarzenia przepisano lub zamieniono)",
        "en": "  predecessor hash differs: expected {expected}, stored {found} (earlier events "
        "were rewritten or swapped)",
    },
    BreakKind.UNHASHED: {
        "pl": "  zdarzenie bez skrótów po rozpoczęciu łańcucha (dopisane z pominięciem usługi "
        "albo skróty usunięto)",
        "en": "  an event without hashes after the chain began (added outside the service, "
        "or its hashes erased)",
    },
    BreakKind.HEAD: {
        "pl": "  zdarzenie nr {found} leży poza zapisaną głową łańcucha (nr {expected}): "
        "dopisane z pominięciem usługi",
        "en": "  event no. {found} lies beyond the recorded chain head (no. {expected}): "
        "added outside the service",
    },
    "head_end": {
        "pl": "  zapisana głowa łańcucha ({found}) nie zgadza się z ostatnim ogniwem ({expected})",
        "en": "  the recorded chain head ({found}) differs from the last link ({expected})",
    },
}
_EVENTS = {
    "pl": {"one": "zdarzenie", "few": "zdarzenia", "many": "zdarzeń", "other": "zdarzenia"},
    "en": {"one": "event", "other": "events"},
}
_DISTRIBUTIONS = {
    "pl": {"one": "rozsyłka", "few": "rozsyłki", "many": "rozsyłek", "other": "rozsyłki"},
    "en": {"one": "distribution", "other": "distributions"},
}


def _t(settings: Settings, key: str, **values: Any) -> str:
    texts = _TEXT[key]
    return texts.get(settings.language, texts["pl"]).format(**values)


def _count(settings: Settings, n: int, forms: dict[str, dict[str, str]]) -> str:
    language = "en" if settings.language == "en" else "pl"
    return count_of(n, forms[language], language)


def _break_lines(settings: Settings, d: CheckedDistribution, broken: Break) -> list[str]:
    where = {"id": broken.distribution_id, "kind": d.kind}
    if broken.event_id is None:
        lines = [_t(settings, "at_end", **where)]
        key = {BreakKind.MISSING: "missing_end", BreakKind.HEAD: "head_end"}[broken.kind]
    else:
        seq = _t(settings, "no_number") if broken.seq is None else broken.seq
        lines = [
            _t(
                settings,
                "at_event",
                event=broken.event_id,
                seq=seq,
                event_kind=broken.event_kind,
                recipient=broken.recipient,
                **where,
            )
        ]
        key = broken.kind
    lines.append(_t(settings, key, expected=broken.expected, found=broken.found))
    return lines


def _json(result: SessionCheck) -> dict[str, Any]:
    def broken(b: Break | None) -> dict[str, Any] | None:
        if b is None:
            return None
        return {
            "distribution": b.distribution_id,
            "kind": b.kind.value,
            "event": b.event_id,
            "seq": b.seq,
            "recipient": b.recipient,
            "event_kind": b.event_kind,
            "expected": b.expected,
            "found": b.found,
        }

    return {
        "session": result.session,
        "whole": result.broken is None,
        "checked": result.checked,
        "legacy": result.legacy,
        "distributions": [
            {
                "id": d.check.distribution_id,
                "kind": d.kind,
                "checked": d.check.checked,
                "legacy": d.check.legacy,
                "head": {"hash": d.check.head.hash, "seq": d.check.head.seq},
                "broken": broken(d.check.broken),
            }
            for d in result.distributions
        ],
        "broken": broken(result.broken),
    }


async def _verify(settings: Settings, args: argparse.Namespace, engine: AsyncEngine) -> int:
    result = await verify_session(engine, args.session)
    if result is None:
        print(_t(settings, "no_session", session=args.session), file=sys.stderr)
        return NO_SESSION
    status = WHOLE if result.broken is None else BROKEN
    if args.json:
        print(json.dumps(_json(result), ensure_ascii=False, indent=2))
        return status
    if result.broken is None:
        print(
            _t(
                settings,
                "whole",
                session=result.session,
                distributions=_count(settings, len(result.distributions), _DISTRIBUTIONS),
                events=_count(settings, result.checked, _EVENTS),
            )
        )
    else:
        print(_t(settings, "broken", session=result.session))
    for d in result.distributions:
        values = {
            "id": d.check.distribution_id,
            "kind": d.kind,
            "events": _count(settings, d.check.checked, _EVENTS),
        }
        if d.check.broken is None:
            head = d.check.head.hash or _t(settings, "no_head")
            print(_t(settings, "distribution", head=head, **values))
        else:
            print(_t(settings, "distribution_broken", **values))
    if result.legacy:
        print(_t(settings, "legacy", events=_count(settings, result.legacy, _EVENTS)))
    first = result.broken
    if first is not None:
        d = next(d for d in result.distributions if d.check.broken is first)
        for line in _break_lines(settings, d, first):
            print(line)
    return status


async def _export(settings: Settings, args: argparse.Namespace, engine: AsyncEngine) -> int:
    """The signed evidence pack (PDF/A-3 with the evidence JSON embedded) to ``--output``."""
    output = Path(args.output)
    if await asyncio.to_thread(output.exists) and not args.force:
        raise MailsvcError(f"{output} exists: choose another --output or add --force to replace it")
    async with open_parts(settings) as parts:
        pack = await parts.distributions().evidence_pack(args.session)
    await asyncio.to_thread(_write, output, pack)
    print(_t(settings, "exported", path=output, size=len(pack)))
    return 0


def _write(output: Path, data: bytes) -> None:
    """Whole or not at all: a temporary file beside it, then renamed."""
    tmp = writer_tmp(output)
    tmp.write_bytes(data)
    os.replace(tmp, output)


_Action = Callable[[Settings, argparse.Namespace, AsyncEngine], Awaitable[int]]
# `evidence <action>`: one entry here and one sub-parser in add_parser.
_ACTIONS: dict[str, _Action] = {"verify": _verify, "export": _export}


def cmd_evidence(settings: Settings, args: argparse.Namespace) -> int:
    action = _ACTIONS[args.action]

    async def run() -> int:
        engine = await open_database(settings)
        try:
            return await action(settings, args, engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def add_parser(sub: Any) -> None:
    """Register `mailsvc evidence …` on the main parser."""
    p = sub.add_parser(
        "evidence",
        help="receipt evidence of a session: verify its hash chain, export the signed pack",
        epilog="example: mailsvc evidence verify XV/2026",
    )
    esub = p.add_subparsers(dest="action", required=True)

    a = esub.add_parser(
        "verify",
        help="recompute the hash chain of a session's receipt events; name the first broken link",
        epilog="example: mailsvc evidence verify XV/2026\n\n"
        "exit status: 0 the chain is whole, 1 a link is broken (named), 2 no such session",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("session", help="session number, e.g. XV/2026")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=cmd_evidence)

    a = esub.add_parser(
        "export",
        help="the signed evidence pack of a session: PDF/A-3 with the evidence data embedded",
        epilog="example: mailsvc evidence export XV/2026 --output XV-2026-dowody.pdf",
    )
    a.add_argument("session", help="session number, e.g. XV/2026")
    a.add_argument("--output", required=True, help="the PDF file to write")
    a.add_argument("--force", action="store_true", help="replace an existing file")
    a.set_defaults(func=cmd_evidence)
