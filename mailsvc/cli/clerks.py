"""`mailsvc clerks add|remove|list|reset-password`: the office staff who use the web panel.

A clerk's account lives in the staff subtree (``directory.staff_rdn``), apart from the
councillors, and is a member of ``web.clerks_group``. Passwords are generated, printed once and
stored only hashed. Exit status: 0 done, 1 refused (login taken, unknown, invalid), 75 the
directory is unreachable or busy (EX_TEMPFAIL: the same command may succeed later).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mailsvc import i18n
from mailsvc.app import Parts, cli_command_line, open_parts
from mailsvc.config import Settings
from mailsvc.errors import MailsvcError
from mailsvc.storage.register import os_audit_context
from provisioning.errors import DirectoryUnavailable

TEMPORARY_FAILURE = 75  # sysexits.h EX_TEMPFAIL


def _t(settings: Settings, key: str, **values: Any) -> str:
    return i18n.text(settings.language, key, **values)


async def _add(parts: Parts, args: argparse.Namespace) -> int:
    settings = parts.settings
    context = os_audit_context(cli_command_line())
    person = args.given_name is not None or args.surname is not None
    if person and (args.login or args.name):
        raise MailsvcError(_t(settings, "clerks.usage"))
    if person:
        if not (args.given_name or "").strip() or not (args.surname or "").strip():
            raise MailsvcError(_t(settings, "clerks.usage"))
        clerk = await parts.clerks().add_person(args.given_name, args.surname, context, args.email)
    else:
        if not args.login or args.name is None:
            raise MailsvcError(_t(settings, "clerks.usage"))
        clerk = await parts.clerks().add(args.login, args.name, context, args.email)
    url = f"{settings.web_url}/"
    if args.json:
        print(
            json.dumps(
                {
                    "login": clerk.login,
                    "name": clerk.name,
                    "address": clerk.address,
                    "password": clerk.password,
                    "url": url,
                },
                ensure_ascii=False,
            )
        )
    else:
        print(
            _t(
                settings,
                "clerks.created",
                login=clerk.login,
                name=clerk.name,
                password=clerk.password,
                url=url,
            )
        )
    return 0


async def _remove(parts: Parts, args: argparse.Namespace) -> int:
    settings = parts.settings
    clerk = await parts.clerks().remove(args.login, os_audit_context(cli_command_line()))
    key = "clerks.removed" if clerk.kind == "staff" else "clerks.removed_councillor"
    print(
        _t(
            settings,
            key,
            login=clerk.login,
            group=settings.web.clerks_group,
            minutes=settings.web.recheck_minutes,
        )
    )
    return 0


async def _reset_password(parts: Parts, args: argparse.Namespace) -> int:
    clerk = await parts.clerks().reset_password(args.login, os_audit_context(cli_command_line()))
    if args.json:
        print(json.dumps({"login": clerk.login, "password": clerk.password}))
    else:
        print(_t(parts.settings, "clerks.password", login=clerk.login, password=clerk.password))
    return 0


async def _list(parts: Parts, args: argparse.Namespace) -> int:
    settings = parts.settings
    clerks = await parts.clerks().listing()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "login": c.login,
                        "name": c.name,
                        "email": c.email,
                        "in_group": c.in_group,
                        "active": c.active,
                        "kind": c.kind,
                        "dn": c.dn,
                    }
                    for c in clerks
                ],
                ensure_ascii=False,
            )
        )
        return 0
    if not clerks:
        print(_t(settings, "clerks.none"))
        return 0
    yes, no = _t(settings, "clerks.yes"), _t(settings, "clerks.no")
    print(_t(settings, "clerks.header"))
    for c in clerks:
        state = _t(settings, "status.active" if c.active else "status.disabled")
        kind = _t(settings, f"clerks.kind.{c.kind}")
        print(f"{c.login:<24} {c.name:<32} {yes if c.in_group else no:<9} {state:<10} {kind}")
    return 0


HANDLERS = {"add": _add, "remove": _remove, "list": _list, "reset-password": _reset_password}


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    async with open_parts(settings) as parts:
        return await HANDLERS[args.action](parts, args)


def cmd_clerks(settings: Settings, args: argparse.Namespace) -> int:
    try:
        result: int = asyncio.run(_run(settings, args))
    except DirectoryUnavailable as exc:
        print(f"mailsvc: {_t(settings, 'clerks.unavailable', detail=exc)}", file=sys.stderr)
        return TEMPORARY_FAILURE
    return result


def add_parser(sub: Any) -> None:
    p = sub.add_parser("clerks", help="the clerks who sign in to the web panel")
    csub = p.add_subparsers(dest="action", required=True)

    a = csub.add_parser(
        "add",
        help="make a clerk's account (staff subtree, clerks group); prints its password once",
        epilog="examples:\n"
        "  mailsvc clerks add --given-name Anna --surname Nowak --json\n"
        '  mailsvc clerks add anna.nowak --name "Anna Nowak" '
        "--email anna.nowak@urzad.miasto.example",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument(
        "login",
        nargs="?",
        help="what the clerk types to sign in (a-z, 0-9, . - _); with --name. "
        "Without it, give --given-name and --surname and the login is made from them",
    )
    a.add_argument("--name", help="given name and surname, as the panel shows it (with LOGIN)")
    a.add_argument("--given-name", help="the clerk's given name (the login is made from it)")
    a.add_argument("--surname", help="the clerk's surname")
    a.add_argument("--email", help="the clerk's own address (optional; it signs in too)")
    a.add_argument("--json", action="store_true", help="machine-readable, with the password")
    a.set_defaults(func=cmd_clerks)

    a = csub.add_parser(
        "remove",
        help="take a clerk out of the group and delete the account (a councillor's account "
        "only leaves the group); an open session ends at its next check",
        epilog="example: mailsvc clerks remove anna.nowak",
    )
    a.add_argument("login", help="the clerk's login or address")
    a.set_defaults(func=cmd_clerks)

    a = csub.add_parser(
        "list",
        help="clerks: login, name, in the clerks group or not",
        epilog="example: mailsvc clerks list --json",
    )
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_clerks)

    a = csub.add_parser(
        "reset-password",
        help="give a clerk a new generated password (printed once)",
        epilog="example: mailsvc clerks reset-password anna.nowak",
    )
    a.add_argument("login", help="the clerk's login or address")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_clerks)
