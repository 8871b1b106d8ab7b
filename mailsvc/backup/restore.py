"""`mailsvc restore FILE`: a backup back into an empty var_dir (and an empty database).

Everything is unpacked into a staging directory inside var_dir and checked against the
manifest first, and the settings are checked against what the backup holds (database engine,
directory base DN): any mismatch removes the staging directory and leaves things as they were.
Only then are the files moved into place, the database written and the directory loaded (for
the embedded stack, slapadd into a new database before slapd first starts: `mailsvc stack up`
then serves the saved entries).
"""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailsvc.backup import database, directory, files
from mailsvc.backup.archive import BackupError, extract_verified
from mailsvc.config import Settings

# Saved files restore does not put into use, for the operator to look at.
LEFT_DIR = "restore"


@dataclass
class RestoreReport:
    var_dir: Path
    seconds: float
    created_at: str
    database_kind: str
    database_target: str
    directory_kind: str
    directory_entries: int
    directory_note: str
    parts: dict[str, dict[str, int]]
    external: list[tuple[str, str]] = field(default_factory=list)  # (path, what happened)
    config_copy: str = ""


def require_empty(var_dir: Path) -> None:
    if var_dir.exists() and not var_dir.is_dir():
        raise BackupError(f"var_dir {var_dir} is not a directory")
    if var_dir.is_dir():
        present = sorted(p.name for p in var_dir.iterdir())
        if present:
            shown = ", ".join(present[:5]) + (", …" if len(present) > 5 else "")
            raise BackupError(
                f"var_dir {var_dir} is not empty (it holds {shown}): restore writes only into "
                "an empty var_dir; stop the stack and the service, move that directory away "
                "(or set another var_dir), then restore again"
            )


def _check_references(manifest: dict[str, Any]) -> None:
    """Every member the manifest's sections name is one of its checked files (a section cannot
    point restore at anything outside the staging directory)."""
    files_ = {n for n, m in manifest["members"].items() if not m.get("dir")}
    named = [manifest.get("database", {}).get("member")]
    if manifest.get("directory", {}).get("kind") != "none":
        named.append(manifest["directory"].get("member"))
    named += [item.get("member") for item in manifest.get("external") or []]
    if manifest.get("config"):
        named.append(manifest["config"].get("member"))
    for name in named:
        if name not in files_:
            raise BackupError(f"the backup's manifest names a member it does not hold: {name!r}")


async def _check_target(settings: Settings, manifest: dict[str, Any]) -> None:
    _check_references(manifest)
    saved = manifest["database"]["kind"]
    here = database.database_kind(settings)
    if saved != here:
        raise BackupError(
            f"the backup holds a {saved} database but database.url names a {here} one; "
            "restore it with the same kind of database"
        )
    if here == "sqlite":
        target = database.sqlite_file(settings)
        if target.exists():
            raise BackupError(f"a database already exists at {target}: move it away first")
    elif not database.stack_cluster(settings):  # the stack's own is made anew in var_dir
        await database.check_postgres_empty(settings)
    saved_dir = manifest["directory"]
    if saved_dir["kind"] == "slapcat" and directory.kind_for(settings) == "slapcat":
        if str(saved_dir["base_dn"]).lower() != settings.directory.base_dn.lower():
            raise BackupError(
                f"the backup's directory has base_dn {saved_dir['base_dn']!r} but "
                f"directory.base_dn is {settings.directory.base_dn!r}: set it back first"
            )
        if shutil.which(settings.stack.slapadd) is None:
            raise BackupError(f"{settings.stack.slapadd} is not installed (apt-get install slapd)")


def _prepare(settings: Settings, archive: Path) -> tuple[Path, Path, bool]:
    """(var_dir, a staging directory made inside it, whether var_dir was made here)."""
    var_dir = settings.var_dir.absolute()
    if not archive.is_file():
        raise BackupError(f"{archive.absolute()}: no such file")
    require_empty(var_dir)
    made_var_dir = not var_dir.exists()
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return var_dir, Path(tempfile.mkdtemp(prefix=".restore-", dir=var_dir)), made_var_dir


async def restore_backup(settings: Settings, archive: Path) -> RestoreReport:
    started = time.monotonic()
    var_dir, staging, made_var_dir = await asyncio.to_thread(_prepare, settings, archive)
    placing = False
    try:
        manifest = await asyncio.to_thread(extract_verified, archive, staging)
        await _check_target(settings, manifest)
        placing = True
        report = await _place(settings, manifest, staging)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not placing:
            if made_var_dir:
                with contextlib.suppress(OSError):
                    var_dir.rmdir()
            raise
        if isinstance(exc, Exception):
            raise BackupError(
                f"{exc}\nvar_dir {var_dir} now holds part of the backup: remove it (and the "
                "restored database, if any) before restoring again"
            ) from exc
        raise
    await asyncio.to_thread(shutil.rmtree, staging, True)
    report.seconds = time.monotonic() - started
    return report


async def _place(settings: Settings, manifest: dict[str, Any], staging: Path) -> RestoreReport:
    await asyncio.to_thread(_move_var, settings, staging)

    db = manifest["database"]
    staged_db = staging / db["member"]
    if db["kind"] == "sqlite":
        target = await asyncio.to_thread(database.restore_sqlite, staged_db, settings)
        db_target = str(target)
    elif database.stack_cluster(settings):
        # The secrets are back in var_dir: the cluster is made with the saved passwords,
        # loaded, and stopped again (`mailsvc stack up` starts it with the rest).
        await database.restore_into_stack_cluster(staged_db, settings)
        db_target = f"the stack's PostgreSQL cluster ({settings.var_dir.absolute() / 'postgres'})"
    else:
        await database.restore_postgres(staged_db, settings)
        db_target = "database.url (PostgreSQL)"

    entries, note = await _directory(settings, manifest["directory"], staging)
    external, config_copy = await asyncio.to_thread(_outside_var, settings, manifest, staging)
    return RestoreReport(
        var_dir=settings.var_dir.absolute(),
        seconds=0.0,
        created_at=str(manifest.get("created_at", "")),
        database_kind=db["kind"],
        database_target=db_target,
        directory_kind=manifest["directory"]["kind"],
        directory_entries=entries,
        directory_note=note,
        parts=manifest.get("parts") or {},
        external=external,
        config_copy=config_copy,
    )


def _move_var(settings: Settings, staging: Path) -> None:
    """var_dir's saved files into place (renames: staging is inside var_dir)."""
    var_dir = settings.var_dir.absolute()
    saved_var = staging / files.VAR_PREFIX.rstrip("/")
    if saved_var.is_dir():
        for entry in sorted(saved_var.iterdir()):
            entry.rename(var_dir / entry.name)
    files.chown_mail(settings)


def _outside_var(
    settings: Settings, manifest: dict[str, Any], staging: Path
) -> tuple[list[tuple[str, str]], str]:
    """Key files configured outside var_dir, and the configuration file at backup time."""
    external = []
    for item in manifest.get("external") or []:
        external.append((item["path"], _external(staging / item["member"], Path(item["path"]))))
    config_copy = ""
    if manifest.get("config"):
        left = settings.var_dir.absolute() / LEFT_DIR / "config"
        config_copy = str(_leave(staging / manifest["config"]["member"], left))
    return external, config_copy


async def _directory(settings: Settings, saved: dict[str, Any], staging: Path) -> tuple[int, str]:
    """Load the saved directory where the settings point; (entries loaded, a note)."""
    if saved["kind"] == "none":
        return 0, str(saved.get("note") or "the backup holds no directory")
    ldif = staging / saved["member"]
    here = directory.kind_for(settings)
    if here == "slapcat" and saved["kind"] == "slapcat":
        await asyncio.to_thread(directory.load_embedded, settings, ldif)
        return int(saved["entries"]), ""
    if here == "ldap":
        added, note = await directory.readd(settings, ldif)
        if not note:
            return added, ""
        kept = await asyncio.to_thread(_leave, ldif, settings.var_dir.absolute() / LEFT_DIR)
        return 0, f"{note}; the saved entries are in {kept} (LDIF) for the directory's admin"
    kept = await asyncio.to_thread(_leave, ldif, settings.var_dir.absolute() / LEFT_DIR)
    return 0, (
        f"the saved directory ({saved['kind']}) cannot be loaded into this stack; its entries "
        f"are in {kept} (LDIF): start the stack and add them with ldapadd -c"
    )


def _leave(path: Path, directory_: Path) -> Path:
    directory_.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory_ / path.name
    shutil.move(path, target)
    return target


def _external(staged: Path, target: Path) -> str:
    if target.exists():
        if target.is_file() and filecmp.cmp(staged, target, shallow=False):
            return "already there, identical"
        return "exists with other content: left as it is"
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.move(staged, target)
    target.chmod(0o600)
    return "restored"
