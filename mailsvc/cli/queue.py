"""`mailsvc queue …` (the delivery queue and dead letters) and `mailsvc capture list`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from email import message_from_bytes, policy
from typing import Any

from mailsvc.app import open_database, open_queue
from mailsvc.config import Settings
from mailsvc.domain.localtime import local_time
from mailsvc.relay.delivery import capture
from mailsvc.storage.queue import STATUSES, DeliveryRow, MailQueue, MessageDetail
from mailsvc.storage.spool import spool_name, spool_path

# Without --status: what an operator watches (waiting, in flight, dead letters).
DEFAULT_STATUSES = ("queued", "inflight", "deferred", "dead")

_TEXT: dict[str, dict[str, str]] = {
    "empty": {"pl": "Kolejka jest pusta.", "en": "The queue is empty."},
    "unknown": {"pl": "Nie ma w kolejce: {queue_id}", "en": "Not in the queue: {queue_id}"},
    "retried": {
        "pl": "{queue_id} <{recipient}>: {status} → do doręczenia teraz",
        "en": "{queue_id} <{recipient}>: {status} → due now",
    },
    "nothing": {"pl": "Nic do ponowienia.", "en": "Nothing to retry."},
    "deleted": {
        "pl": "Usunięto {queue_id}: od <{sender}>, {size} B, adresaci: {recipients}",
        "en": "Deleted {queue_id}: from <{sender}>, {size} B, recipients: {recipients}",
    },
    "no_body": {
        "pl": "(treść usunięta po doręczeniu)",
        "en": "(body removed after delivery)",
    },
    "capture_empty": {
        "pl": "Brak przechwyconych wiadomości w {path}",
        "en": "No captured messages in {path}",
    },
    "header": {
        "pl": "IDENTYFIKATOR       STAN       TRASA PRÓB  NASTĘPNA PRÓBA       ADRESAT",
        "en": "QUEUE ID            STATUS     ROUTE TRIES NEXT ATTEMPT         RECIPIENT",
    },
}
_FIELDS = {
    "pl": {
        "queue_id": "identyfikator",
        "status": "stan",
        "origin": "pochodzenie",
        "from": "nadawca (MAIL FROM)",
        "received": "przyjęta",
        "size": "rozmiar",
        "client": "klient",
        "body": "treść",
        "kept": "przechowywana",
        "dropped": "usunięta",
        "recipients": "adresaci",
        "error": "błąd",
        "attempts": "prób",
        "next": "następna próba",
        "reply": "ostatnia odpowiedź",
    },
    "en": {
        "queue_id": "queue id",
        "status": "status",
        "origin": "origin",
        "from": "sender (MAIL FROM)",
        "received": "received",
        "size": "size",
        "client": "client",
        "body": "body",
        "kept": "kept",
        "dropped": "removed",
        "recipients": "recipients",
        "error": "error",
        "attempts": "attempts",
        "next": "next attempt",
        "reply": "last reply",
    },
}


def _t(settings: Settings, key: str, **values: Any) -> str:
    texts = _TEXT[key]
    return texts.get(settings.language, texts["pl"]).format(**values)


def _when(moment: datetime | None, zone: tzinfo) -> str:
    return "-" if moment is None else f"{local_time(moment, zone):%Y-%m-%d %H:%M:%S}"


def _iso(moment: datetime | None, zone: tzinfo) -> str | None:
    return None if moment is None else local_time(moment, zone).isoformat()


def _row_json(row: DeliveryRow, zone: tzinfo) -> dict[str, Any]:
    return {
        "queue_id": row.queue_id,
        "recipient": row.recipient,
        "route": row.route,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": _iso(row.next_attempt_at, zone),
        "updated_at": _iso(row.updated_at, zone),
        "last_reply": row.last_reply,
        "mail_from": row.mail_from,
    }


def _detail_json(detail: MessageDetail, zone: tzinfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "queue_id": detail.queue_id,
        "mail_from": detail.mail_from,
        "received_at": _iso(detail.received_at, zone),
        "size": detail.size,
        "client": detail.client,
        "origin": detail.origin,
        "status": detail.status,
        "body_kept": detail.body_kept,
        "error": detail.error,
        "deliveries": [_row_json(r, zone) for r in detail.deliveries],
    }
    if detail.body is not None:
        out["body"] = detail.body.decode("utf-8", "replace")
    return out


async def _with_queue(settings: Settings, work: Callable[[MailQueue], Awaitable[int]]) -> int:
    engine = await open_database(settings)
    queue = open_queue(settings, engine)
    try:
        return await work(queue)
    finally:
        await queue.close()
        await engine.dispose()


async def _list(settings: Settings, args: argparse.Namespace, queue: MailQueue) -> int:
    wanted = args.status or list(DEFAULT_STATUSES)
    statuses = None if "all" in wanted else wanted
    rows = await queue.list_deliveries(statuses)
    if args.json:
        print(json.dumps([_row_json(r, settings.zone) for r in rows], ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print(_t(settings, "empty"))
        return 0
    print(_t(settings, "header"))
    for r in rows:
        waiting = r.status in ("queued", "deferred")
        next_at = _when(r.next_attempt_at, settings.zone) if waiting else "-"
        print(
            f"{r.queue_id:<19} {r.status:<10} {r.route:<5} {r.attempts:>5} "
            f"{next_at:<20} "
            f"{r.recipient}"
        )
        if r.last_reply and r.status != "delivered":
            print(f"{'':<19} {r.last_reply.splitlines()[0][:110]}")
    return 0


async def _show(settings: Settings, args: argparse.Namespace, queue: MailQueue) -> int:
    detail = await queue.show(args.queue_id, with_body=args.body)
    if detail is None:
        print(_t(settings, "unknown", queue_id=args.queue_id), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_detail_json(detail, settings.zone), ensure_ascii=False, indent=2))
        return 0
    f = _FIELDS.get(settings.language, _FIELDS["pl"])
    lines = [
        (f["queue_id"], detail.queue_id),
        (f["status"], detail.status),
        (f["origin"], detail.origin),
        (f["from"], f"<{detail.mail_from}>"),
        (f["received"], _when(detail.received_at, settings.zone)),
        (f["size"], f"{detail.size} B"),
        (f["client"], detail.client or "-"),
        (f["body"], f["kept"] if detail.body_kept else f["dropped"]),
    ]
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"{label + ':':<{width}} {value}")
    print(f"{f['recipients']}:")
    for r in detail.deliveries:
        print(f"  <{r.recipient}>  {r.status}  ({r.route}, {f['attempts']}: {r.attempts})")
        if r.status in ("queued", "deferred"):
            print(f"    {f['next']}: {_when(r.next_attempt_at, settings.zone)}")
        if r.last_reply:
            reply = r.last_reply if r.status != "dead" else r.last_reply.strip().splitlines()[-1]
            print(textwrap.indent(f"{f['reply']}: {reply}", "    "))
    if detail.error:
        print(f"{f['error']}:")
        print(textwrap.indent(detail.error.rstrip(), "  "))
    if args.body:
        print()
        if detail.body is None:
            print(_t(settings, "no_body"))
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(detail.body)
            sys.stdout.buffer.flush()
    return 0


async def _retry(settings: Settings, args: argparse.Namespace, queue: MailQueue) -> int:
    if args.queue_id and await queue.show(args.queue_id) is None:
        print(_t(settings, "unknown", queue_id=args.queue_id), file=sys.stderr)
        return 1
    retried = await queue.retry(args.queue_id, deferred=args.all_deferred, dead=args.dead)
    if not retried:
        print(_t(settings, "nothing"))
    for item in retried:
        print(
            _t(
                settings,
                "retried",
                queue_id=item.queue_id,
                recipient=item.recipient,
                status=item.previous_status,
            )
        )
    return 0


async def _delete(settings: Settings, args: argparse.Namespace, queue: MailQueue) -> int:
    detail = await queue.delete(args.queue_id)
    if detail is None:
        print(_t(settings, "unknown", queue_id=args.queue_id), file=sys.stderr)
        return 1
    spooled = spool_name(detail.parts)
    if spooled is not None:
        spool_path(settings.var_dir, spooled).unlink(missing_ok=True)
    recipients = ", ".join(f"<{r.recipient}> ({r.status})" for r in detail.deliveries) or "-"
    print(
        _t(
            settings,
            "deleted",
            queue_id=detail.queue_id,
            sender=detail.mail_from,
            size=detail.size,
            recipients=recipients,
        )
    )
    return 0


_QUEUE_ACTIONS = {"list": _list, "show": _show, "retry": _retry, "delete": _delete}


def cmd_queue(settings: Settings, args: argparse.Namespace) -> int:
    action = _QUEUE_ACTIONS[args.action]

    async def work(queue: MailQueue) -> int:
        return await action(settings, args, queue)

    return asyncio.run(_with_queue(settings, work))


def cmd_capture(settings: Settings, args: argparse.Namespace) -> int:
    directory = capture.capture_dir(settings.var_dir)
    items = capture.list_captured(directory)
    rows = []
    for item in items:
        header = message_from_bytes(item.message, policy=policy.default)
        try:
            subject = str(header.get("Subject", ""))
        except (ValueError, IndexError):  # an unparsable header must not hide the message
            subject = "?"
        rows.append(
            {
                "file": str(item.path),
                "captured_at": item.captured_at,
                "mail_from": item.mail_from,
                "recipients": list(item.recipients),
                "subject": subject,
            }
        )
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print(_t(settings, "capture_empty", path=directory))
        return 0
    for row in rows:
        print(row["file"])
        print(f"  <{row['mail_from']}> → {', '.join(f'<{r}>' for r in row['recipients'])}")
        print(f"  {row['subject']}")
    return 0


def add_parser(sub: Any) -> None:
    """Register `mailsvc queue …` and `mailsvc capture …` on the main parser."""
    p = sub.add_parser(
        "queue",
        help="the delivery queue: list, show, retry or delete messages and dead letters",
        epilog="example: mailsvc queue list --status dead",
    )
    qsub = p.add_subparsers(dest="action", required=True)

    a = qsub.add_parser(
        "list",
        help="deliveries waiting, in flight or dead (one line per recipient)",
        epilog="examples:\n  mailsvc queue list\n  mailsvc queue list --status failed --json\n"
        "  mailsvc queue list --status all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument(
        "--status",
        action="append",
        choices=[*STATUSES, "all"],
        help=f"only this status (repeatable; default: {', '.join(DEFAULT_STATUSES)})",
    )
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=cmd_queue)

    a = qsub.add_parser(
        "show",
        help="one message: envelope, each recipient's status, attempts, last reply, error",
        epilog="example: mailsvc queue show 3f9c2a1b0d4e5f60",
    )
    a.add_argument("queue_id")
    a.add_argument("--body", action="store_true", help="also print the message itself")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=cmd_queue)

    a = qsub.add_parser(
        "retry",
        help="make deliveries due now; dead letters are queued again",
        epilog="examples:\n  mailsvc queue retry 3f9c2a1b0d4e5f60\n"
        "  mailsvc queue retry --all-deferred\n  mailsvc queue retry --dead",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = a.add_mutually_exclusive_group(required=True)
    which.add_argument("queue_id", nargs="?", help="one message (its waiting and dead recipients)")
    which.add_argument("--all-deferred", action="store_true", help="every deferred delivery")
    which.add_argument("--dead", action="store_true", help="every dead letter")
    a.set_defaults(func=cmd_queue)

    a = qsub.add_parser(
        "delete",
        help="remove a message from the queue (no questions asked; prints what it removed)",
        epilog="example: mailsvc queue delete 3f9c2a1b0d4e5f60",
    )
    a.add_argument("queue_id")
    a.set_defaults(func=cmd_queue)

    p = sub.add_parser(
        "capture",
        help="mail the local capture kept instead of sending it out (smarthost.port = 0)",
        epilog="example: mailsvc capture list",
    )
    csub = p.add_subparsers(dest="action", required=True)
    a = csub.add_parser(
        "list",
        help="captured messages under <var_dir>/capture, oldest first",
        epilog="example: mailsvc capture list --json",
    )
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=cmd_capture)
