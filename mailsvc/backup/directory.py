"""The directory in a backup, as LDIF.

- The embedded stack's slapd: ``slapcat`` of the whole suffix (entries with their operational
  attributes, the form ``slapadd`` loads back), safe while slapd runs (back_mdb). Restored with
  ``slapadd`` into a new database before slapd first starts (LocalStack.load_directory).
- A system directory (directory.url set): the councillors', staff and groups subtrees read over
  LDAP with the service's own bind (the directory adapter). Restored over LDAP when those
  subtrees are empty; otherwise the LDIF is left for the operator beside the restored data.
- The embedded Samba AD DC is not exported (the service does not use it as its directory yet);
  the backup says so.
"""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ldap3.utils.dn import parse_dn

from mailsvc.app import open_directory
from mailsvc.backup.archive import BackupError
from mailsvc.config import Settings
from mailsvc.stack import LocalStack
from provisioning.directory.bulk import add_entries

MEMBER = "directory/directory.ldif"
Entry = tuple[str, dict[str, list[bytes]]]
# Kept by the server, refused in an LDAP add (slapcat writes them, slapadd takes them).
_OPERATIONAL = {
    name.lower()
    for name in (
        "structuralObjectClass", "entryUUID", "entryCSN", "creatorsName", "createTimestamp",
        "modifiersName", "modifyTimestamp", "contextCSN", "entryDN", "subschemaSubentry",
        "hasSubordinates", "memberOf", "pwdChangedTime",
    )
}  # fmt: skip


@dataclass(frozen=True)
class Export:
    kind: str  # "slapcat" | "ldap" | "none"
    file: Path | None
    entries: int
    note: str = ""


def kind_for(settings: Settings) -> str:
    # Active Directory (the stack's Samba or the office's own) is backed up by its own tools:
    # its entries carry SIDs, GUIDs and hashes that no LDAP add can put back.
    if settings.ldap.kind == "ad":
        return "none"
    if settings.directory.url:
        return "ldap"
    return "slapcat"


def _subtrees(settings: Settings) -> tuple[str, str, str]:
    d = settings.directory
    return d.councillors_dn, d.staff_dn, d.groups_dn


async def export(settings: Settings, staging: Path) -> Export:
    kind = kind_for(settings)
    target = staging / "directory.ldif"
    if kind == "none":
        return Export(
            "none",
            None,
            0,
            "directory.kind = 'ad': Active Directory is not saved by mailsvc backup; back it up "
            "with its own tools (the stack's Samba AD DC: stop it and use `samba-tool domain "
            "backup offline`; Windows: a system state backup)",
        )
    if kind == "slapcat":
        count = await asyncio.to_thread(LocalStack(settings).export_directory, target)
        return Export(kind, target, count)
    directory = open_directory(settings)
    count = 0
    try:
        with target.open("x", encoding="utf-8") as fh:
            target.chmod(0o600)  # password hashes
            for base in _subtrees(settings):
                for dn, attributes in await directory.export_subtree(base):
                    fh.write(ldif_record(dn, attributes))
                    count += 1
    finally:
        await directory.close()
    return Export(kind, target, count)


# -- LDIF -----------------------------------------------------------------------------------


def _plain(value: bytes) -> bool:
    return (
        value.isascii()
        and all(32 <= b < 127 for b in value)
        and not value.startswith((b" ", b":", b"<"))
        and not value.endswith(b" ")
    )


def _line(attr: str, value: bytes) -> str:
    if _plain(value):
        return f"{attr}: {value.decode('ascii')}\n"
    return f"{attr}:: {base64.b64encode(value).decode('ascii')}\n"


def ldif_record(dn: str, attributes: dict[str, list[bytes]]) -> str:
    lines = [_line("dn", dn.encode("utf-8"))]
    for attr, values in attributes.items():
        lines.extend(_line(attr, v) for v in values)
    return "".join(lines) + "\n"


def read_ldif(path: Path) -> Iterator[Entry]:
    """Entries of an LDIF content file (folded lines, base64 values; no change records)."""
    with path.open("rb") as fh:
        logical: list[bytes] = []
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if line.startswith(b" ") and logical:
                logical[-1] += line[1:]
            elif not line:
                if logical:
                    yield _entry(logical)
                logical = []
            elif not line.startswith(b"#"):
                logical.append(line)
        if logical:
            yield _entry(logical)


def _entry(lines: list[bytes]) -> Entry:
    dn = ""
    attributes: dict[str, list[bytes]] = {}
    for line in lines:
        name, sep, rest = line.partition(b":")
        if not sep:
            raise BackupError(f"the saved LDIF has a line without a colon: {line[:80]!r}")
        if rest.startswith(b":"):
            value = base64.b64decode(rest[1:].strip())
        else:
            value = rest.lstrip(b" ")
        attr = name.decode("ascii")
        if attr.lower() == "dn":
            dn = value.decode("utf-8")
        elif attr.lower() != "version":
            attributes.setdefault(attr, []).append(value)
    if not dn:
        raise BackupError("the saved LDIF has an entry without a dn")
    return dn, attributes


# -- restoring ------------------------------------------------------------------------------


def load_embedded(settings: Settings, ldif: Path) -> None:
    """slapadd the saved entries into the embedded stack's new database (blocking)."""
    LocalStack(settings).load_directory(ldif)


def _below(dn: str, bases: tuple[str, ...]) -> bool:
    key = dn.lower().replace(" ", "")
    return any(key == b or key.endswith("," + b) for b in bases)


async def readd(settings: Settings, ldif: Path) -> tuple[int, str]:
    """Add the saved councillors, staff and groups back into a system directory whose
    subtrees for them are empty; returns (entries added, a note; the note says why nothing
    was added)."""
    bases = tuple(b.lower().replace(" ", "") for b in _subtrees(settings))
    wanted = [
        (dn, {k: v for k, v in attrs.items() if k.lower() not in _OPERATIONAL})
        for dn, attrs in read_ldif(ldif)
        if _below(dn, bases)
    ]
    directory = open_directory(settings)
    try:
        existing: set[str] = set()
        for base in _subtrees(settings):
            found = await directory.export_subtree(base)
            if len(found) > 1:
                return 0, (
                    f"the directory at {settings.directory.url} already holds entries below "
                    f"{base}; nothing was added to it"
                )
            existing.update(dn.lower() for dn, _ in found)
        by_depth: dict[int, list[Entry]] = defaultdict(list)
        for dn, attrs in wanted:
            if dn.lower() not in existing:
                by_depth[len(parse_dn(dn))].append((dn, attrs))
        added = 0
        for depth in sorted(by_depth):  # parents before children
            items = by_depth[depth]
            results = await add_entries(directory.config, directory.ssl_context(), items, ())
            for result in results:
                if isinstance(result, Exception):
                    raise BackupError(f"could not add a saved entry back: {result}")
                added += 1
        return added, ""
    finally:
        await directory.close()
