"""`mailsvc db upgrade|status`: the database schema's revision against the code's.

``upgrade`` is the one command that changes an existing database's schema: every other start
refuses a database at another revision than the code's (``mailsvc.storage.schema``).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from mailsvc import i18n
from mailsvc.config import Settings
from mailsvc.storage import schema
from mailsvc.storage.db import create_engine
from mailsvc.storage.schema import SchemaState, Status

_UPGRADED = {
    Status.EMPTY: "db.upgrade.created",
    Status.CURRENT: "db.upgrade.current",
    Status.BEHIND: "db.upgrade.done",
    Status.UNVERSIONED: "db.upgrade.adopted",
}


def _text(settings: Settings, key: str, state: SchemaState) -> str:
    return i18n.text(
        settings.language,
        key,
        current=state.current or "-",
        head=state.head,
        baseline=schema.BASELINE,
    )


async def _run(settings: Settings, action: str) -> int:
    engine = create_engine(settings.database_url)
    try:
        if action == "upgrade":
            before = await schema.upgrade(engine)  # SchemaVersionError for a newer database
            print(_text(settings, _UPGRADED[before.status], before))
            return 0
        found = await schema.state(engine)
        print(_text(settings, f"db.status.{found.status.value}", found))
        return 0 if found.status in (Status.CURRENT, Status.EMPTY) else 1
    finally:
        await engine.dispose()


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, args.action))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "db",
        help="the database schema: upgrade it to this version's, or show its revision",
        epilog="example: mailsvc db upgrade (after a backup, with the service stopped)",
    )
    dsub = p.add_subparsers(dest="action", required=True)
    dsub.add_parser(
        "upgrade",
        help="bring the database schema to this version's (the only command that does)",
        epilog="example: mailsvc db upgrade",
    ).set_defaults(func=cmd_db)
    dsub.add_parser(
        "status",
        help="the database schema's revision and this version's (exit 1: not usable)",
        epilog="example: mailsvc db status",
    ).set_defaults(func=cmd_db)
