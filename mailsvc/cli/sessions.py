"""Clerk commands for council sessions and their distributions:

``mailsvc sessions create|list|show|attach``, ``mailsvc distribute SESSION``,
``mailsvc distributions list|cancel``, ``mailsvc receipts SESSION`` and
``mailsvc receipts parse FILE.eml``, ``mailsvc print-list SESSION``, ``mailsvc savings``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailsvc.app import Parts, open_parts
from mailsvc.config import Settings
from mailsvc.distribution.service import DistributionError, Distributions, NoticeRefused
from mailsvc.domain.vocabulary import DISTRIBUTION_KINDS, DOCUMENT_KINDS, SESSION_KINDS
from mailsvc.storage.db import utcnow
from mailsvc.storage.register import os_audit_context
from mailsvc.storage.sessions import (
    DistributionRow,
)

# The shape of a local date and time, to tell "2027-02-30 10:00" (no such day) from "jutro".
_DATETIME_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?")


def _actor() -> str:
    return os_audit_context("cli").actor


def _local_datetime(settings: Settings, value: str, option: str) -> datetime:
    """``2026-12-17 10:00`` or ``2026-12-17T10:00`` in the council's local time, naive.

    A time that does not exist there (the hour skipped when clocks go forward in spring) is
    refused rather than silently moved by an hour.
    """
    pl = _pl(settings)
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError as exc:
        shape = _DATETIME_SHAPE.fullmatch(value.strip())
        if shape is not None:  # the right shape but no such day or hour: 2027-02-30, 25:00
            raise DistributionError(
                f"{option} {value!r}: nie ma takiej daty ani godziny ({exc})"
                if pl
                else f"{option} {value!r}: no such date or time ({exc})"
            ) from None
        raise DistributionError(
            f"{option} {value!r}: oczekiwano daty i godziny czasu lokalnego, np. 2026-12-17 10:00"
            if pl
            else f"{option} {value!r}: expected a local date and time such as 2026-12-17 10:00"
        ) from None
    if parsed.tzinfo is not None:
        raise DistributionError(
            f"{option} {value!r}: podaj czas lokalny rady, bez strefy czasowej"
            if pl
            else f"{option} {value!r}: give the council's local time, no zone"
        )
    zone = ZoneInfo(settings.distribution.timezone)
    round_trip = parsed.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)
    if round_trip.replace(tzinfo=None) != parsed:
        raise DistributionError(
            f"{option} {value!r}: tej godziny nie ma w strefie {zone.key} (zmiana czasu na "
            "letni); podaj inną"
            if pl
            else f"{option} {value!r}: this time does not exist in {zone.key} (clocks go "
            "forward); give another"
        )
    return parsed


def _pl(settings: Settings) -> bool:
    return settings.language != "en"


def _pages(settings: Settings, pages: int | None) -> str:
    """ ", 3 s." / ", 3 p." after a document's size; nothing when the count is unknown."""
    if not pages:
        return ""
    return f", {pages} s." if _pl(settings) else f", {pages} p."


def _print_distribution(settings: Settings, service: Distributions, d: DistributionRow) -> None:
    due = service.to_local(d.due_at).strftime("%Y-%m-%d %H:%M")
    sent = service.to_local(d.sent_at).strftime("%Y-%m-%d %H:%M") if d.sent_at else "-"
    extra = []
    if d.committee:
        extra.append(f"komisja={d.committee}" if _pl(settings) else f"committee={d.committee}")
    if d.late:
        extra.append("SPÓŹNIONA" if _pl(settings) else "LATE")
    if d.override_reason:
        extra.append(f"override: {d.override_reason}")
    print(
        f"#{d.id:<4} {d.kind:<13} {d.status:<10} {due:<17} {sent:<17} "
        f"docs={len(d.document_ids)} {' '.join(extra)}".rstrip()
    )


# -- sessions ---------------------------------------------------------------------------------


async def _sessions(settings: Settings, args: argparse.Namespace, parts: Parts) -> int:
    service = parts.distributions()
    actor = _actor()
    if args.action == "create":
        row = await service.create_session(
            number=args.number,
            kind=args.kind,
            starts_at=_local_datetime(settings, args.at, "--at"),
            place=args.place,
            title=args.title or "",
            agenda=args.agenda or [],
            actor=actor,
        )
        print(
            f"Utworzono sesję {row.number} ({row.kind}), {row.starts_at:%Y-%m-%d %H:%M}"
            if _pl(settings)
            else f"Created session {row.number} ({row.kind}), {row.starts_at:%Y-%m-%d %H:%M}"
        )
        return 0
    if args.action == "list":
        rows = await service.store.list_sessions()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "number": r.number,
                            "kind": r.kind,
                            "starts_at": r.starts_at.isoformat(),
                            "place": r.place,
                            "status": r.status,
                        }
                        for r in rows
                    ],
                    ensure_ascii=False,
                    indent=2,
                )
            )
            return 0
        if not rows:
            print("Brak sesji." if _pl(settings) else "No sessions.")
        for r in rows:
            print(
                f"{r.number:<12} {r.kind:<13} {r.starts_at:%Y-%m-%d %H:%M}  {r.status:<9} {r.place}"
            )
        return 0
    if args.action == "show":
        session = await service.session(args.number)
        print(
            f"{session.number}  {session.kind}  {session.starts_at:%Y-%m-%d %H:%M}  {session.place}"
        )
        if session.status != "planned":
            print(f"status: {session.status}")
        docs = await service.store.documents(session.id)
        items = await service.store.agenda(session.id)
        by_item: dict[int | None, list[Any]] = {}
        for d in docs:
            by_item.setdefault(d.agenda_item_id, []).append(d)

        def doc_line(d: Any) -> str:
            replaced = " (zastąpiony)" if d.replaced_by and _pl(settings) else ""
            replaced = replaced or (" (replaced)" if d.replaced_by else "")
            pages = _pages(settings, d.pages)
            return (
                f"      [{d.id}] {d.filename} ({d.doc_kind}, {d.size} B{pages}) "
                f"sha256={d.sha256}{replaced}"
            )

        print("Porządek obrad:" if _pl(settings) else "Agenda:")
        for item in items:
            print(f"  {item.position}. {item.title}")
            for d in by_item.get(item.id, []):
                print(doc_line(d))
        if by_item.get(None):
            print("Materiały do całej sesji:" if _pl(settings) else "Session documents:")
            for d in by_item[None]:
                print(doc_line(d))
        print("Rozesłania:" if _pl(settings) else "Distributions:")
        for dist in await service.store.distributions(session_id=session.id):
            _print_distribution(settings, service, dist)
        return 0
    if args.action == "attach":
        # Every file is checked before any is stored: one refused file leaves the session as
        # it was, so the clerk fixes it and runs the same command again.
        await _check_files(settings, args.files)
        total = len(args.files)
        for i, name in enumerate(args.files, start=1):
            doc = await service.attach(
                args.number,
                Path(name),
                doc_kind=args.kind,
                agenda_item=args.item,
                replaces=args.replaces,
                actor=actor,
            )
            pages = _pages(settings, doc.pages)
            print(
                f"[{i}/{total}] [{doc.id}] {doc.filename} ({doc.media_type}, {doc.size} B{pages}) "
                f"sha256={doc.sha256}"
            )
        return 0
    raise AssertionError(args.action)


async def _check_files(settings: Settings, names: Sequence[str]) -> None:
    """Refuse the whole command when any file is unreadable or its content does not match its
    name (the use case checks each file again as it stores it)."""
    from mailsvc.domain.documents import DocumentRejected, check_document

    for name in names:
        path = Path(name)
        try:
            await asyncio.to_thread(check_document, path, path.name, settings.language)
        except DocumentRejected as exc:
            raise DistributionError(
                f"{exc} Nie dołączono żadnego pliku."
                if _pl(settings)
                else f"{exc} No file was attached."
            ) from None
        except OSError as exc:
            raise DistributionError(
                f"{path}: nie można odczytać pliku ({exc.strerror})"
                if _pl(settings)
                else f"{path}: cannot be read ({exc.strerror})"
            ) from None


# -- distribute ---------------------------------------------------------------------------


async def _distribute(settings: Settings, args: argparse.Namespace, parts: Parts) -> int:
    service = parts.distributions()
    at = _local_datetime(settings, args.at, "--at") if args.at else None
    new_date = _local_datetime(settings, args.new_date, "--new-date") if args.new_date else None
    if args.send_now and at is not None and service.to_utc(at) > utcnow():
        raise DistributionError(
            f"--send-now wysyła od razu, a --at {args.at!r} to przyszłość: pomiń jedno z nich"
            if _pl(settings)
            else f"--send-now sends at once but --at {args.at!r} is in the future: drop one"
        )
    try:
        dist = await service.schedule(
            args.session,
            kind=args.kind,
            at=at,
            committee=args.committee,
            documents=args.document or None,
            note=args.note or "",
            override_notice=args.override_notice,
            new_date=new_date,
            actor=_actor(),
        )
    except NoticeRefused as exc:
        raise DistributionError(
            f'{exc} Aby rozesłać mimo to, podaj powód: --override-notice "…" (zostanie zapisany).'
            if _pl(settings)
            else f'{exc} To send it anyway give the reason: --override-notice "…" (it is recorded).'
        ) from None
    when = service.to_local(dist.due_at).strftime("%Y-%m-%d %H:%M")
    print(
        f"Zaplanowano rozesłanie #{dist.id} ({dist.kind}) na {when}; "
        f"dokumentów: {len(dist.document_ids)}. Wyśle je `mailsvc serve`."
        if _pl(settings)
        else f"Scheduled distribution #{dist.id} ({dist.kind}) for {when}; "
        f"documents: {len(dist.document_ids)}. `mailsvc serve` sends it."
    )
    if args.send_now:

        def progress(done: int, total: int) -> None:
            if sys.stderr.isatty() or total >= 200:
                label = "Kolejkowanie" if _pl(settings) else "Queueing"
                end = "\n" if done == total else "\r"
                print(f"{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

        result = await service.send(dist.id, progress=progress)
        delivered = await parts.deliver_queued()
        print(
            f"Wysłano: {result.queued} wiadomości, doręczono {delivered}."
            if _pl(settings)
            else f"Sent: {result.queued} messages, {delivered} delivered."
        )
    return 0


async def _distributions(settings: Settings, args: argparse.Namespace, parts: Parts) -> int:
    service = parts.distributions()
    if args.action == "cancel":
        dist = await service.cancel(args.id)
        print(f"#{dist.id}: {dist.status}")
        return 0
    session_id = (await service.session(args.session)).id if args.session else None
    rows = await service.store.distributions(session_id=session_id)
    if not rows:
        print("Brak rozesłań." if _pl(settings) else "No distributions.")
    for d in rows:
        _print_distribution(settings, service, d)
    return 0


# -- receipts, print list, savings -------------------------------------------------------------


def _write(data: bytes | str, output: str | None) -> None:
    if output:
        path = Path(output)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        print(str(path), file=sys.stderr)
    elif isinstance(data, bytes):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        sys.stdout.write(data)


async def _receipts(settings: Settings, args: argparse.Namespace, parts: Parts) -> int:
    from mailsvc.receipts import report

    service = parts.distributions()
    print(
        "Zbieranie potwierdzeń…" if _pl(settings) else "Collecting receipts…",
        file=sys.stderr,
    )
    matrix = await service.matrix(args.session, include_copies=args.copies)
    fmt = args.format
    if fmt == "pdf" and not args.output and sys.stdout.isatty():
        raise DistributionError("--format pdf writes binary data: give --output FILE.pdf")
    data: bytes | str
    if fmt == "table":
        data = report.render_table(matrix) + "\n"
    elif fmt == "csv":
        data = report.render_csv(matrix)
    elif fmt == "json":
        data = json.dumps(report.render_json(matrix), ensure_ascii=False, indent=2) + "\n"
    else:
        data = await asyncio.to_thread(report.render_pdf, matrix)
    _write(data, args.output)
    return 0


def cmd_receipts_parse(settings: Settings, args: argparse.Namespace) -> int:
    from mailsvc.receipts.parse import MAX_INPUT, scan, to_json

    path = Path(args.file)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_INPUT)  # the parser looks at no more than this
    except OSError as exc:
        raise DistributionError(
            f"{path}: nie można odczytać pliku ({exc.strerror})"
            if _pl(settings)
            else f"{path}: cannot be read ({exc.strerror})"
        ) from None
    report = scan(raw)
    if args.json:
        print(json.dumps(to_json(report), ensure_ascii=False, indent=2))
        return 0
    print(f"kind: {report.kind}")
    if report.original_message_id:
        print(f"original message: {report.original_message_id}")
    for r in report.recipients:
        status = f" {r.status}" if r.status else ""
        perm = " (permanent)" if r.permanent else ""
        reason = f" [{r.reason.value}]" if r.reason is not None else ""
        print(f"  {r.address}: {r.action}{status}{perm}{reason} {r.diagnostic}".rstrip())
    return 0


async def _print_list(settings: Settings, args: argparse.Namespace, parts: Parts) -> int:
    from mailsvc.receipts.printlist import (
        print_items,
        render_print_list_pdf,
        render_print_list_text,
    )

    service = parts.distributions()
    matrix = await service.matrix(args.session)
    cutover = service.cutover() or date.max
    districts = {c.address: c.district for c in await parts.register.all()}
    items = print_items(matrix, cutover=cutover, districts=districts)
    if args.format == "pdf":
        if not args.output and sys.stdout.isatty():
            raise DistributionError("--format pdf writes binary data: give --output FILE.pdf")
        data: bytes | str = await asyncio.to_thread(
            render_print_list_pdf,
            matrix.council,
            matrix.session_number,
            matrix.session_at,
            items,
            matrix.language,
            time_zone=matrix.time_zone,
        )
    else:
        data = render_print_list_text(matrix.council, matrix.session_number, items, matrix.language)
    _write(data, args.output)
    return 0


async def _savings(settings: Settings, args: argparse.Namespace, parts: Parts) -> int:
    service = parts.distributions()
    cutover = service.cutover()
    rows = await service.savings(args.session)
    total_pages = sum(r[1] for r in rows)
    total_cost = sum((r[3] for r in rows), Decimal(0))
    if args.json:
        print(
            json.dumps(
                {
                    "cutover": cutover.isoformat() if cutover else None,
                    "cost_per_page": settings.distribution.cost_per_page,
                    "sessions": [
                        {"session": s, "pages": p, "deliveries": n, "saved": str(c)}
                        for s, p, n, c in rows
                    ],
                    "pages": total_pages,
                    "saved": str(total_cost),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    pl = _pl(settings)
    if cutover is None:
        print(
            "Data przejścia na obieg elektroniczny nie jest ustawiona (distribution.cutover_date)."
            if pl
            else "The electronic cut-over date is not set (distribution.cutover_date)."
        )
    else:
        print(f"Od {cutover.isoformat()}:" if pl else f"Since {cutover.isoformat()}:")
    for session, pages, deliveries, cost in rows:
        print(
            f"  {session:<12} {pages:>7} str. {deliveries:>5} dor. {cost:>10.2f} zł"
            if pl
            else f"  {session:<12} {pages:>7} pages {deliveries:>5} deliveries PLN {cost:>10.2f}"
        )
    per_page = settings.distribution.cost_per_page
    print(
        f"Razem: {total_pages} stron, {total_cost:.2f} zł (po {per_page} zł/str.)"
        if pl
        else f"Total: {total_pages} pages, PLN {total_cost:.2f} (at {per_page}/page)"
    )
    return 0


# -- wiring -----------------------------------------------------------------------------------

_Handler = Callable[[Settings, argparse.Namespace, Parts], Awaitable[int]]


def _runner(handler: _Handler) -> Callable[[Settings, argparse.Namespace], int]:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        async def go() -> int:
            async with open_parts(settings) as parts:
                return await handler(settings, args, parts)

        return asyncio.run(go())

    return run


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sessions", help="council sessions: create, list, show, attach documents")
    ssub = p.add_subparsers(dest="action", required=True)
    a = ssub.add_parser(
        "create",
        help="create a council session",
        epilog='example: mailsvc sessions create XV/2026 --at "2026-12-17 10:00" '
        '--place "Sala Obrad, ul. Rynek 1" --agenda "Otwarcie sesji" --agenda "Budżet 2027"',
    )
    a.add_argument("number", help="session number, e.g. XV/2026")
    a.add_argument("--kind", choices=SESSION_KINDS, default="ordinary")
    a.add_argument("--at", required=True, help="local date and time: 2026-12-17 10:00")
    a.add_argument("--place", required=True)
    a.add_argument("--title", default="")
    a.add_argument("--agenda", action="append", help="an agenda item (repeat, in order)")
    a.set_defaults(func=_runner(_sessions))
    a = ssub.add_parser(
        "list", help="list sessions", epilog="example: mailsvc sessions list --json"
    )
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_runner(_sessions))
    a = ssub.add_parser(
        "show",
        help="a session with its agenda, documents and distributions",
        epilog="example: mailsvc sessions show XV/2026",
    )
    a.add_argument("number")
    a.set_defaults(func=_runner(_sessions))
    a = ssub.add_parser(
        "attach",
        help="attach documents (checked by content, stored by SHA-256)",
        epilog="example: mailsvc sessions attach XV/2026 projekt-uchwały.pdf "
        "--kind draft-resolution --item 2",
    )
    a.add_argument("number")
    a.add_argument("files", nargs="+")
    a.add_argument("--kind", choices=DOCUMENT_KINDS, default="other")
    a.add_argument("--item", type=int, help="agenda item number the document belongs to")
    a.add_argument("--replaces", type=int, help="id of the document this one amends")
    a.set_defaults(func=_runner(_sessions))

    p = sub.add_parser(
        "distribute",
        help="schedule a distribution of a session's documents to the councillors",
        epilog='example: mailsvc distribute XV/2026 --at "2026-12-09 08:00"',
    )
    p.add_argument("session")
    p.add_argument("--at", help="local date and time to send (default: now)")
    p.add_argument("--kind", choices=DISTRIBUTION_KINDS, default="notice")
    p.add_argument("--committee", help="only this committee's members (slug)")
    p.add_argument("--document", type=int, action="append", help="document id (repeat)")
    p.add_argument("--note", help="what changed (supplement, date change)")
    p.add_argument("--new-date", help="date-change: the new local date and time")
    p.add_argument("--override-notice", metavar="REASON", help="send despite the notice rules")
    p.add_argument(
        "--send-now",
        action="store_true",
        help="send and deliver from this command instead of waiting for `mailsvc serve`",
    )
    p.set_defaults(func=_runner(_distribute))

    p = sub.add_parser(
        "distributions",
        help="list or cancel distributions",
        epilog="examples: mailsvc distributions list --session XV/2026\n"
        "          mailsvc distributions cancel 12",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = p.add_subparsers(dest="action", required=True)
    a = dsub.add_parser(
        "list",
        help="distributions in order of their due time",
        epilog="example: mailsvc distributions list --session XV/2026",
    )
    a.add_argument("--session")
    a.set_defaults(func=_runner(_distributions))
    a = dsub.add_parser(
        "cancel",
        help="cancel a scheduled distribution",
        epilog="example: mailsvc distributions cancel 12",
    )
    a.add_argument("id", type=int)
    a.set_defaults(func=_runner(_distributions))

    p = sub.add_parser(
        "receipts",
        help="receipts report of a session, or parse a DSN/MDN file",
        epilog="examples: mailsvc receipts XV/2026 --format pdf --output XV-2026.pdf\n"
        "          mailsvc receipts parse bounce.eml --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", help='session number, or "parse" followed by FILE.eml')
    p.add_argument("file", nargs="?", help="with parse: the message file")
    p.add_argument("--format", choices=("table", "csv", "json", "pdf"), default="table")
    p.add_argument("--output", "-o", help="write to this file")
    p.add_argument("--copies", action="store_true", help="include the copies (office, mayor)")
    p.add_argument("--json", action="store_true", help="with parse: JSON output")
    p.set_defaults(func=_receipts_command)

    p = sub.add_parser(
        "print-list",
        help="who needs a paper copy of what (before the cut-over: everyone)",
        epilog="example: mailsvc print-list XV/2026 --format pdf --output druk.pdf",
    )
    p.add_argument("session")
    p.add_argument("--format", choices=("text", "pdf"), default="text")
    p.add_argument("--output", "-o")
    p.set_defaults(func=_runner(_print_list))

    p = sub.add_parser(
        "savings",
        help="paper saved since the electronic cut-over",
        epilog="example: mailsvc savings --session XV/2026 --json",
    )
    p.add_argument("--session")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_runner(_savings))


def _receipts_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.session == "parse":
        if not args.file:
            raise DistributionError(
                "receipts parse needs the message file: receipts parse FILE.eml"
            )
        return cmd_receipts_parse(settings, args)
    if args.file:
        raise DistributionError(f"unexpected argument {args.file!r}")
    return _runner(_receipts)(settings, args)
