"""`mailsvc councillors …`: roster import, single mailboxes, mandates, passwords, history."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from mailsvc import i18n
from mailsvc.app import Parts, cli_command_line, open_parts
from mailsvc.config import Settings
from mailsvc.directory.councillors import ApplyResult, CreatedAccount
from mailsvc.directory.roster_import import apply_import, prepare_import, refuse_invalid
from mailsvc.errors import MailsvcError
from mailsvc.storage.register import AuditContext, os_audit_context
from provisioning.roster import Roster
from provisioning.sync import Plan


def _t(settings: Settings, key: str, **values: Any) -> str:
    return i18n.text(settings.language, key, **values)


def _progress(label: str) -> Any:
    """A progress bar on stderr for long runs (never on short ones)."""

    def show(done: int, total: int) -> None:
        if total < 200:
            return
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r{label} [{'#' * filled}{' ' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _print_plan(settings: Settings, roster: Roster, plan: Plan, addresses: dict[int, str]) -> None:
    print(
        _t(
            settings,
            "plan.header",
            path=roster.path,
            encoding=roster.encoding,
            delimiter=roster.delimiter,
            rows=len(roster.entries),
        )
    )
    for key, count in (
        ("plan.create", len(plan.creates)),
        ("plan.update", len(plan.updates)),
        ("plan.disable", len(plan.disables)),
        ("plan.unchanged", len(plan.unchanged)),
    ):
        print(f"  {_t(settings, key):<14} {count:>6}")
    for c in plan.creates[:200]:
        e = c.entry
        print(f"  + {addresses.get(e.line, '?'):<40} {e.full_name} ({e.district})")
    for u in plan.updates[:200]:
        what = ", ".join(
            f"{k}: {before!s} → {after!s}" for k, (before, after) in sorted(u.changes.items())
        )
        extra = " [reactivate]" if u.reactivate else ""
        print(f"  ~ {u.existing.address:<40} {what}{extra}")
    for d in plan.disables[:200]:
        print(f"  - {d.existing.address:<40} {d.reason}")
    shown = len(plan.creates[:200]) + len(plan.updates[:200]) + len(plan.disables[:200])
    if shown < plan.changes:
        print(f"  … ({plan.changes - shown} more)")


async def run_import(
    parts: Parts,
    path: Path,
    *,
    encoding: str | None = None,
    dry_run: bool = False,
    skip_invalid: bool = False,
    quiet: bool = False,
    today: date | None = None,
    context: AuditContext | None = None,
    max_bytes: int | None = None,
) -> tuple[Plan, ApplyResult | None, list[str], dict[int, str]]:
    """``mailsvc councillors import``: prepare, print the plan, apply it (unless dry_run).
    Returns the plan, the result, the row problems and the planned address per roster line."""
    settings = parts.settings
    service = parts.councillors()
    prepared = await prepare_import(
        service,
        path,
        committees=settings.committee_names,
        encoding=encoding,
        today=today,
        max_bytes=max_bytes,
    )
    refuse_invalid(prepared, language=settings.language, skip_invalid=skip_invalid)
    if not quiet:
        _print_plan(settings, prepared.roster, prepared.plan, prepared.addresses)
    if dry_run:
        return prepared.plan, None, prepared.problems, prepared.addresses
    result = await apply_import(
        service,
        prepared,
        context or os_audit_context(cli_command_line()),
        language=settings.language,
        skip_invalid=skip_invalid,
        progress=None if quiet else _progress(_t(settings, "import.progress")),
    )
    return prepared.plan, result, prepared.problems, prepared.addresses


def _write_letters(settings: Settings, accounts: list[CreatedAccount], target: str) -> None:
    from mailsvc.compose import CouncillorCredentials, credentials_letters

    html = credentials_letters(
        settings,
        [
            CouncillorCredentials(a.display_name, a.address, a.password, a.district or None)
            for a in accounts
        ],
    )
    Path(target).write_text(html, encoding="utf-8")
    print(_t(settings, "letters.written", path=target, count=len(accounts)), file=sys.stderr)


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    async with open_parts(settings) as parts:
        plan, result, problems, addresses = await run_import(
            parts,
            Path(args.file),
            encoding=args.encoding,
            dry_run=args.dry_run,
            skip_invalid=args.skip_invalid,
            quiet=args.json,
        )
        if result is not None and result.created:
            await parts.deliver_queued()
    if result is None:  # dry run
        if args.json:
            print(
                json.dumps(
                    {
                        "created": [
                            {"address": addresses[c.entry.line], "password": None}
                            for c in plan.creates
                        ],
                        "updated": [u.existing.address for u in plan.updates],
                        "disabled": [d.existing.address for d in plan.disables],
                        "unchanged": len(plan.unchanged),
                        "errors": problems,
                        "dry_run": True,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(_t(settings, "import.dry_run"))
        return 0
    if args.letters and result.created:
        _write_letters(settings, result.created, args.letters)
    if args.json:
        print(json.dumps(result.as_json(), ensure_ascii=False))
    else:
        for account in result.created:
            print(f"{account.address}\t{account.password}")
        print(
            _t(
                settings,
                "import.done",
                created=len(result.created),
                updated=len(result.updated),
                disabled=len(result.disabled),
                unchanged=result.unchanged,
                errors=len(result.errors),
            )
        )
        for error in result.errors:
            print(f"  ! {error}", file=sys.stderr)
    return 1 if result.errors and not args.skip_invalid else 0


async def _add(settings: Settings, args: argparse.Namespace) -> int:
    async with open_parts(settings) as parts:
        account = await parts.councillors().add(
            args.given_name, args.surname, os_audit_context(cli_command_line()), args.district
        )
        await parts.deliver_queued()
    if args.json:
        print(json.dumps({"address": account.address, "password": account.password}))
    else:
        print(
            _t(settings, "councillor.created", address=account.address, password=account.password)
        )
    if args.letter:
        _write_letters(settings, [account], args.letter)
    return 0


async def _reset_password(settings: Settings, args: argparse.Namespace) -> int:
    async with open_parts(settings) as parts:
        account = await parts.councillors().reset_password(
            args.address, os_audit_context(cli_command_line()), allow_clerks=True
        )
    if args.json:
        print(json.dumps({"address": account.address, "password": account.password}))
    else:
        print(_t(settings, "password.reset", address=account.address, password=account.password))
    if args.letter:
        _write_letters(settings, [account], args.letter)
    return 0


async def _end_mandate(settings: Settings, args: argparse.Namespace) -> int:
    try:
        on = date.fromisoformat(args.on)
    except ValueError:
        raise MailsvcError(f"--on {args.on!r}: expected a date as YYYY-MM-DD") from None
    async with open_parts(settings) as parts:
        now = await parts.councillors().end_mandate(
            args.address, on, args.reason or "", os_audit_context(cli_command_line())
        )
    key = "mandate.ended_now" if now else "mandate.scheduled"
    print(_t(settings, key, address=args.address, on=on.isoformat()))
    return 0


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    async with open_parts(settings) as parts:
        rows = await parts.councillors().listing(include_all=args.all)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "address": r.address,
                        "name": r.display_name,
                        "district": r.district,
                        "role": r.role,
                        "committees": list(r.committees),
                        "status": r.status,
                        "term_start": r.term_start.isoformat() if r.term_start else None,
                        "mandate_end": r.mandate_end.isoformat() if r.mandate_end else None,
                    }
                    for r in rows
                ],
                ensure_ascii=False,
            )
        )
        return 0
    for r in rows:
        status = _t(settings, f"status.{r.status}")
        end = r.mandate_end.isoformat() if r.mandate_end else "—"
        start = r.term_start.isoformat() if r.term_start else "—"
        print(f"{r.address:<42} {r.display_name:<32} {status:<12} {start} … {end}")
    return 0


async def _history(settings: Settings, args: argparse.Namespace) -> int:
    async with open_parts(settings) as parts:
        entries = await parts.register.history(args.address.strip().lower())
    if not entries:
        print(_t(settings, "history.none", address=args.address))
        return 1
    for e in entries:
        change = ""
        if e.before or e.after:
            change = f" {json.dumps(e.before, ensure_ascii=False)} → "
            change += json.dumps(e.after, ensure_ascii=False)
        print(f"{e.at:%Y-%m-%d %H:%M:%S} UTC  {e.action:<14} {e.actor} ({e.command}){change}")
    return 0


HANDLERS = {
    "import": _import,
    "add": _add,
    "reset-password": _reset_password,
    "end-mandate": _end_mandate,
    "list": _list,
    "history": _history,
}


def cmd_councillors(settings: Settings, args: argparse.Namespace) -> int:
    result: int = asyncio.run(HANDLERS[args.action](settings, args))
    return result


def add_parser(sub: Any) -> None:
    p = sub.add_parser("councillors", help="manage councillor mailboxes")
    csub = p.add_subparsers(dest="action", required=True)

    a = csub.add_parser(
        "import",
        help="bring the directory in line with a roster (CSV from Excel)",
        epilog="example: mailsvc councillors import rada.csv --dry-run",
    )
    a.add_argument("file", help="roster CSV (; or , separated; UTF-8 or Windows-1250)")
    a.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    a.add_argument("--encoding", help="file encoding, e.g. cp1250 (default: detected)")
    a.add_argument("--skip-invalid", action="store_true", help="apply the valid rows anyway")
    a.add_argument("--json", action="store_true", help="machine-readable result")
    a.add_argument("--letters", metavar="FILE.html", help="write credentials letters to print")
    a.set_defaults(func=cmd_councillors)

    a = csub.add_parser(
        "add",
        help="create one councillor's mailbox",
        epilog="example: mailsvc councillors add --given-name Łukasz --surname Żółć --json",
    )
    a.add_argument("--given-name", required=True)
    a.add_argument("--surname", required=True)
    a.add_argument("--district", default="")
    a.add_argument("--json", action="store_true", help='print {"address": ..., "password": ...}')
    a.add_argument("--letter", metavar="FILE.html", help="write the credentials letter")
    a.set_defaults(func=cmd_councillors)

    a = csub.add_parser(
        "reset-password",
        help="give a councillor a new generated password",
        epilog="example: mailsvc councillors reset-password lukasz.zolc@rada.miasto.example",
    )
    a.add_argument("address")
    a.add_argument("--json", action="store_true")
    a.add_argument("--letter", metavar="FILE.html", help="write the credentials letter")
    a.set_defaults(func=cmd_councillors)

    a = csub.add_parser(
        "end-mandate",
        help="end a mandate on a date (a past or today's date applies at once)",
        epilog="example: mailsvc councillors end-mandate jan.kowalski@rada.miasto.example "
        "--on 2026-12-31 --reason 'zrzeczenie się mandatu'",
    )
    a.add_argument("address")
    a.add_argument("--on", required=True, help="YYYY-MM-DD")
    a.add_argument("--reason", default="")
    a.set_defaults(func=cmd_councillors)

    a = csub.add_parser(
        "list",
        help="councillors with status, term and mandate end",
        epilog="example: mailsvc councillors list --all --json",
    )
    a.add_argument("--all", action="store_true", help="include disabled and removed")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_councillors)

    a = csub.add_parser(
        "history",
        help="every directory change of one councillor",
        epilog="example: mailsvc councillors history lukasz.zolc@rada.miasto.example",
    )
    a.add_argument("address")
    a.set_defaults(func=cmd_councillors)
