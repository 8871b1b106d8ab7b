"""`mailsvc backup FILE`: one file holding everything needed to bring the service back.

The order matters little for consistency except in one place: the database and the spool
files of its queued messages are taken at one moment (backup.database). The directory is
exported just before, so a councillor added during the backup may be in the directory and
not yet in the register; restore tolerates that (the register is completed at the next
import or addition).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailsvc import __version__
from mailsvc.backup import database, directory, files
from mailsvc.backup.archive import ArchiveWriter, BackupError
from mailsvc.config import Settings


@dataclass
class BackupReport:
    path: Path
    size: int
    seconds: float
    database_kind: str
    database_bytes: int
    directory_kind: str
    directory_entries: int
    directory_bytes: int
    directory_note: str
    parts: dict[str, files.Tally]  # secrets, documents, spool, mailboxes (when asked), config
    external: list[str] = field(default_factory=list)  # paths outside var_dir
    missing_spool: list[str] = field(default_factory=list)


_STALE_STAGING = 24 * 3600.0  # a backup killed midway leaves its staging directory


def _prepare(settings: Settings, target: Path) -> tuple[Path, Path]:
    """The target checked, and a staging directory inside var_dir (the spool files are
    hard-linked into it: the same file system)."""
    target = target.absolute()
    var_dir = settings.var_dir.absolute()
    if target.is_relative_to(var_dir):
        raise BackupError(
            f"{target} is inside var_dir ({var_dir}): keep backups elsewhere, "
            "a backup inside what it saves is lost with it"
        )
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} does not exist: create it first")
    if not var_dir.is_dir():
        raise BackupError(f"var_dir {var_dir} does not exist: there is nothing to back up")
    for old in var_dir.glob(".backup-*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > _STALE_STAGING:
                shutil.rmtree(old, ignore_errors=True)
    return target, Path(tempfile.mkdtemp(prefix=".backup-", dir=var_dir))


async def create_backup(settings: Settings, target: Path, *, mailboxes: bool) -> BackupReport:
    started = time.monotonic()
    target, staging = await asyncio.to_thread(_prepare, settings, target)
    try:
        exported = await directory.export(settings, staging)
        snap = await database.take(settings, staging)
        report = await asyncio.to_thread(_write, settings, target, snap, exported, mailboxes)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)
    report.seconds = time.monotonic() - started
    return report


def _write(
    settings: Settings,
    target: Path,
    snap: database.Snapshot,
    exported: directory.Export,
    mailboxes: bool,
) -> BackupReport:
    """The archive from the snapshot and var_dir's files (blocking: run in a thread)."""
    writer = ArchiveWriter(target)
    try:
        db_bytes = writer.add_file(snap.member, snap.file)
        dir_bytes = 0
        if exported.file is not None:
            dir_bytes = writer.add_file(directory.MEMBER, exported.file)
        parts: dict[str, files.Tally] = {name: files.Tally() for name in ("secrets", "documents")}
        for name in files.SECRET_DIRS:
            files.add_tree(writer, settings, name, parts["secrets"])
        external = []
        for number, (what, path) in enumerate(files.external_files(settings), 1):
            member = f"external/{number}-{path.name}"
            parts["secrets"].add(writer.add_file(member, path))
            external.append({"member": member, "path": str(path), "what": what})
        files.add_tree(writer, settings, files.DOCUMENTS_DIR, parts["documents"])
        parts["spool"] = files.Tally()
        files.add_spool(writer, settings, snap.spool, parts["spool"])
        if mailboxes:
            parts["mailboxes"] = files.Tally()
            files.add_mailboxes(writer, settings, parts["mailboxes"])
        config: dict[str, str] | None = None
        if settings.source is not None and settings.source.is_file():
            config = {"member": f"config/{settings.source.name}", "path": str(settings.source)}
            parts["config"] = files.Tally()
            parts["config"].add(writer.add_file(config["member"], settings.source))
        manifest: dict[str, Any] = {
            "mailsvc_version": __version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "settings_source": str(settings.source) if settings.source else "built-in",
            "var_dir": str(settings.var_dir),
            "domain": settings.domain,
            "database": {
                "kind": snap.kind,
                "member": snap.member,
                "spool_missing": snap.missing_spool,
            },
            "directory": {
                "kind": exported.kind,
                "member": directory.MEMBER if exported.file else None,
                "entries": exported.entries,
                "base_dn": settings.directory.base_dn,
                "url": settings.directory.url,
                "note": exported.note,
            },
            "parts": {name: tally.as_dict() for name, tally in parts.items()},
            "mailboxes": mailboxes,
            "external": external,
            "config": config,
        }
        size = writer.finish(manifest)
    except BaseException:
        writer.abort()
        raise
    return BackupReport(
        path=target,
        size=size,
        seconds=0.0,
        database_kind=snap.kind,
        database_bytes=db_bytes,
        directory_kind=exported.kind,
        directory_entries=exported.entries,
        directory_bytes=dir_bytes,
        directory_note=exported.note,
        parts=parts,
        external=[e["path"] for e in external],
        missing_spool=snap.missing_spool,
    )
