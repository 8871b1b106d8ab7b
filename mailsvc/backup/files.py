"""The files of var_dir a backup keeps, and where restored ones go.

Kept: ``secrets/`` (generated passwords, DKIM keys, the evidence signing certificate) and
``tls/`` (the SMTP self-signed pair), ``documents/`` (session documents and the encoded parts
queued messages stream; written by rename, never changed), the spool files of queued messages
(linked at the database's moment, see backup.database) and, on request, the Maildirs under
``mail/``. Key files configured outside var_dir are kept too, and restored where the settings
name them. Not kept: what the stack or the service make again (configuration files, logs, pid
files, Dovecot's state and index files), temporary uploads and the local capture of outgoing
mail.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mailsvc.backup.archive import ArchiveWriter, walk_files
from mailsvc.config import Settings

SECRET_DIRS = ("secrets", "tls")
DOCUMENTS_DIR = "documents"
SPOOL_DIR = "spool"
MAIL_DIR = "mail"
VAR_PREFIX = "var/"
# Dovecot rebuilds its indexes from the Maildir; they change in place while it runs.
_DOVECOT_INDEX = re.compile(r"^dovecot(\.list)?\.index(\..+)?$")
_MAILDIR_FLAGS = ":"  # "<unique name>:2,<flags>": the name before it never changes


@dataclass
class Tally:
    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size

    def as_dict(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


def var_member(settings: Settings, path: Path) -> str:
    return VAR_PREFIX + path.relative_to(settings.var_dir).as_posix()


def add_tree(writer: ArchiveWriter, settings: Settings, name: str, tally: Tally) -> None:
    """Every complete file below var_dir/``name`` (temporary files being renamed are not)."""
    for path in walk_files(settings.var_dir / name):
        if ".tmp" in path.name:
            continue
        try:
            tally.add(writer.add_file(var_member(settings, path), path))
        except FileNotFoundError:
            continue  # gone since the listing (a replaced temporary file)


def add_spool(writer: ArchiveWriter, settings: Settings, linked: list[Path], tally: Tally) -> None:
    for path in linked:
        member = f"{VAR_PREFIX}{SPOOL_DIR}/{path.name}"
        tally.add(writer.add_file(member, path))


def add_mailboxes(writer: ArchiveWriter, settings: Settings, tally: Tally) -> None:
    """The Maildirs while Dovecot may be delivering, reading and moving: a message renamed
    (new/ to cur/, flags changed) between the listing and the read is looked up under its new
    name, and kept once; one expunged meanwhile is left out."""
    root = settings.var_dir / MAIL_DIR
    if not root.is_dir():
        return
    kept: set[tuple[str, str]] = set()  # (Maildir, unique name)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        writer.add_dir(var_member(settings, here))
        if here.name == "tmp":  # deliveries in progress
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            if _DOVECOT_INDEX.match(name):
                continue
            if here.name not in ("new", "cur"):
                try:
                    tally.add(writer.add_file(var_member(settings, here / name), here / name))
                except FileNotFoundError:
                    pass  # replaced by Dovecot at this very moment: it makes it again
                continue
            unique = name.split(_MAILDIR_FLAGS, 1)[0]
            key = (str(here.parent), unique)
            if key in kept:
                continue
            kept.add(key)
            path = here / name
            for _attempt in range(3):  # it may move again while it is looked up
                found = _current(here.parent, path, unique)
                if found is None:
                    break  # expunged: left out
                try:
                    tally.add(writer.add_file(var_member(settings, found), found))
                    break
                except FileNotFoundError:
                    path = found


def _current(maildir: Path, path: Path, unique: str) -> Path | None:
    if path.exists():
        return path
    for sub in ("cur", "new"):
        try:
            names = os.listdir(maildir / sub)
        except FileNotFoundError:
            continue
        for name in names:
            if name == unique or name.startswith(unique + _MAILDIR_FLAGS):
                return maildir / sub / name
    return None


def external_files(settings: Settings) -> list[tuple[str, Path]]:
    """Keys and certificates the settings name outside var_dir: (what, path)."""
    candidates: list[tuple[str, str]] = [
        (f"dkim key {s.name}", s.key_file) for s in settings.dkim.selectors if s.key_file
    ]
    candidates += [
        ("evidence signing certificate", settings.evidence.signing_certificate),
        ("evidence signing password", settings.evidence.signing_password_file),
    ]
    if settings.smtp.tls_cert != "auto":
        candidates += [("smtp tls certificate", settings.smtp.tls_cert)]
        candidates += [("smtp tls key", settings.smtp.tls_key)]
    var_dir = settings.var_dir.absolute()
    out = []
    for what, value in candidates:
        if not value:
            continue
        path = Path(value).absolute()
        if not path.is_relative_to(var_dir) and path.is_file():
            out.append((what, path))
    return out


def chown_mail(settings: Settings) -> None:
    """As root, Dovecot delivers and reads as the user 'mail': restored Maildirs become its."""
    from mailsvc.stack.configs import DovecotIdentity

    root = settings.var_dir / MAIL_DIR
    if os.geteuid() != 0 or not root.is_dir():
        return
    who = DovecotIdentity.current()
    os.chown(root, who.mail_uid, who.mail_gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), who.mail_uid, who.mail_gid, follow_symlinks=False)
