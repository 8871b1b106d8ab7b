"""`mailsvc web token create|list|revoke`: API tokens for the clerks' JSON API.

A token is printed once, when it is made; the database keeps only its SHA-256. Automation sends
it as ``Authorization: Bearer msv_…`` to ``/api/v1/…`` (described at ``/api/openapi.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mailsvc.app import cli_command_line, open_database
from mailsvc.config import Settings
from mailsvc.errors import MailsvcError
from mailsvc.storage.clerks import SCOPES, WebStore
from mailsvc.storage.db import utcnow
from mailsvc.storage.register import os_audit_context


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    engine = await open_database(settings)
    try:
        store = WebStore(engine)
        context = os_audit_context(cli_command_line())
        if args.what == "create":
            try:
                token = await store.create_token(
                    args.name,
                    context.actor,
                    scopes=tuple(args.scope or ["read"]),
                    valid_days=args.days,
                )
            except ValueError as exc:
                raise MailsvcError(str(exc)) from None
            await store.audit(
                context.actor,
                context.command,
                "api-token-create",
                details={"name": args.name, "scopes": args.scope or ["read"], "days": args.days},
            )
            print(token)
            print(
                "Zapisz token teraz: nie będzie pokazany ponownie."
                if settings.language != "en"
                else "Keep the token now: it will not be shown again.",
                file=sys.stderr,
            )
            return 0
        if args.what == "revoke":
            if not await store.revoke_token(args.name):
                raise MailsvcError(f"no active API token called {args.name!r}")
            await store.audit(
                context.actor, context.command, "api-token-revoke", details={"name": args.name}
            )
            return 0
        tokens = await store.tokens()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "name": t.name,
                            "created_at": t.created_at.isoformat() + "Z",
                            "created_by": t.created_by,
                            "last_used_at": t.last_used_at.isoformat() + "Z"
                            if t.last_used_at
                            else None,
                            "revoked": t.revoked_at is not None,
                            "expires_at": t.expires_at.isoformat() + "Z" if t.expires_at else None,
                            "scopes": list(t.scopes),
                        }
                        for t in tokens
                    ],
                    ensure_ascii=False,
                )
            )
            return 0
        for t in tokens:
            expired = t.expires_at is not None and t.expires_at <= utcnow()
            state = "revoked" if t.revoked_at else "expired" if expired else "active"
            used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
            print(
                f"{t.name:<32} {state:<8} created {t.created_at:%Y-%m-%d} "
                f"by {t.created_by}; used {used}; scopes {','.join(t.scopes)}"
                + (f"; expires {t.expires_at:%Y-%m-%d}" if t.expires_at else "")
            )
        return 0
    finally:
        await engine.dispose()


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    result: int = asyncio.run(_token(settings, args))
    return result


def add_parser(sub: Any) -> None:
    p = sub.add_parser("web", help="the clerks' web interface: API tokens")
    wsub = p.add_subparsers(dest="action", required=True)
    t = wsub.add_parser("token", help="API tokens for /api/v1 (only hashes are kept)")
    tsub = t.add_subparsers(dest="what", required=True)
    a = tsub.add_parser(
        "create",
        help="make a token and print it once",
        epilog="example: mailsvc web token create --name bip-integration --scope read "
        "--scope distributions --days 90",
    )
    a.add_argument("--name", required=True, help="what the token is for (shown in the audit log)")
    a.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help="what it may do, repeatable: read (the default alone), distributions "
        "(sessions, documents, distributions, the queue), councillors",
    )
    a.add_argument(
        "--days", type=int, default=365, help="days until it stops working (default 365)"
    )
    a.set_defaults(func=cmd_web)
    a = tsub.add_parser(
        "list", help="tokens with their last use", epilog="example: mailsvc web token list --json"
    )
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_web)
    a = tsub.add_parser(
        "revoke",
        help="stop a token from working",
        epilog="example: mailsvc web token revoke --name bip-integration",
    )
    a.add_argument("--name", required=True)
    a.set_defaults(func=cmd_web)
