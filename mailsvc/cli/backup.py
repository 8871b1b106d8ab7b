"""`mailsvc backup FILE` and `mailsvc restore FILE` (mailsvc.backup does the work)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from mailsvc import i18n
from mailsvc.backup import create_backup, restore_backup
from mailsvc.config import Settings
from mailsvc.domain.wording import decimal, format_size

_PARTS = ("secrets", "documents", "spool", "mailboxes")


def _say(settings: Settings, key: str, **values: Any) -> None:
    print(i18n.text(settings.language, key, **values))


def _size(settings: Settings, size: int) -> str:
    return format_size(size, settings.language)


def _seconds(settings: Settings, value: float) -> str:
    return decimal(value, settings.language, "0.0")


def _parts(settings: Settings, parts: dict[str, dict[str, int]], *, restoring: bool) -> None:
    for name in _PARTS:
        tally = parts.get(name)
        if tally is None:
            if name == "mailboxes":
                _say(
                    settings, "restore.mailboxes.none" if restoring else "backup.mailboxes.skipped"
                )
            continue
        label = i18n.text(settings.language, f"backup.label.{name}")
        _say(
            settings,
            "backup.part",
            label=label,
            files=tally["files"],
            size=_size(settings, tally["bytes"]),
        )


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    report = asyncio.run(create_backup(settings, Path(args.file), mailboxes=args.mailboxes))
    size = _size(settings, report.size)
    seconds = _seconds(settings, report.seconds)
    _say(settings, "backup.done", path=report.path, size=size, seconds=seconds)
    _say(
        settings,
        "backup.database",
        kind=report.database_kind,
        size=_size(settings, report.database_bytes),
    )
    if report.directory_kind == "none":
        _say(settings, "backup.directory.none", note=report.directory_note)
    else:
        _say(
            settings,
            "backup.directory",
            kind=report.directory_kind,
            entries=report.directory_entries,
            size=_size(settings, report.directory_bytes),
        )
    _parts(settings, {name: t.as_dict() for name, t in report.parts.items()}, restoring=False)
    if settings.source is not None and "config" in report.parts:
        _say(settings, "backup.config", path=settings.source)
    if report.missing_spool:
        _say(
            settings,
            "backup.spool.missing",
            count=len(report.missing_spool),
            example=report.missing_spool[0],
        )
    _say(settings, "backup.private")
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    report = asyncio.run(restore_backup(settings, Path(args.file)))
    _say(
        settings,
        "restore.done",
        created=report.created_at,
        var_dir=report.var_dir,
        seconds=_seconds(settings, report.seconds),
    )
    _say(settings, "restore.database", kind=report.database_kind, target=report.database_target)
    if report.directory_note:
        _say(settings, "restore.directory.note", note=report.directory_note)
    else:
        _say(
            settings,
            "restore.directory",
            kind=report.directory_kind,
            entries=report.directory_entries,
        )
    _parts(settings, report.parts, restoring=True)
    for path, status in report.external:
        _say(settings, "restore.external", path=path, status=status)
    if report.config_copy:
        _say(settings, "restore.config", path=report.config_copy)
    _say(settings, "restore.next")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "backup",
        help="save database, directory, documents, keys and queue to one file (service may run)",
        epilog="example: mailsvc backup /srv/backup/mailsvc-$(date +%F).tar.gz --mailboxes",
    )
    p.add_argument("file", help="the backup file to write (tar.gz, created 0600)")
    p.add_argument(
        "--mailboxes", action="store_true", help="include the Maildirs under var_dir/mail"
    )
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser(
        "restore",
        help="restore a backup into an empty var_dir (then: mailsvc stack up)",
        epilog="example: mailsvc restore /srv/backup/mailsvc-2026-12-03.tar.gz",
    )
    p.add_argument("file", help="a file written by mailsvc backup")
    p.set_defaults(func=cmd_restore)
