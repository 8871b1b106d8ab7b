"""Message bodies too big to hold in memory: one file each under ``<var_dir>/spool/``.

The SMTP door writes a large body to its own file while it arrives (``SpoolWriter``), so memory
per session stays at one read buffer whatever the message's size; the queue row keeps only the
head (our trace fields and the message's header) and the file's name. The delivery worker
sends the file after the head and removes it once every recipient is settled.

The file holds the body in SMTP's wire form: CRLF line ends and dot-stuffing (RFC 5321
4.5.2), ending with CRLF and without the terminating dot line. That is exactly what an LMTP or
SMTP DATA needs, so the file goes to the socket as it is stored (``sendfile``). Bare LF line
ends from the client are turned into CRLF on the way in, with the dot-stuffing that the new line
starts need: a bare LF followed by a dot must never reach the mailbox store as anything but
text (the same normalisation the in-memory path gets from the LMTP client).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_CRLF = b"\r\n"
SUFFIX = ".msg"


def spool_dir(var_dir: Path) -> Path:
    return var_dir / "spool"


def spool_path(var_dir: Path, name: str) -> Path:
    """The file of a spooled body; ``name`` comes from the database, so it is checked."""
    if not name.endswith(SUFFIX) or "/" in name or name.startswith("."):
        raise ValueError(f"bad spool file name {name!r}")
    return spool_dir(var_dir) / name


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a file just created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def normalize_wire(lines: bytes, crlfs: int | None = None) -> bytes:
    """Complete CRLF-terminated lines of a dot-stuffed body, made canonical: any bare LF
    becomes CRLF, and every line that starts with a dot starts with two (a client's lone
    leading dot, which SMTP removes, is removed). ``lines`` begins at a line start. The
    result is what the LMTP client makes of the same body received in memory (``stuff``).
    ``crlfs``: the number of CRLFs in ``lines``, when the caller has counted them already."""
    if crlfs is None:
        crlfs = lines.count(_CRLF)
    # Two scans decide the usual case (nothing to change, no copy): no bare LF, no line that
    # starts with a dot. Lines that start with two dots are canonical but rare: they take the
    # long way, which leaves them as they are.
    if lines.count(b"\n") == crlfs and not lines.startswith(b".") and b"\n." not in lines:
        return lines
    text = (_CRLF + lines).replace(b"\r\n.", _CRLF)  # undo the client's stuffing
    text = text.replace(_CRLF, b"\n").replace(b"\n", _CRLF)
    return text.replace(b"\r\n.", b"\r\n..")[2:]


def unstuff(wire: bytes) -> bytes:
    """The body text of wire-form lines (each line starting with a dot loses one)."""
    text = (_CRLF + wire).replace(b"\r\n.", _CRLF)
    return text[2:]


@dataclass
class SpooledBody:
    """A body stored durably in its own file (fsync'd, its directory entry too)."""

    name: str
    path: Path
    size: int  # bytes in wire form
    eight_bit: bool  # some byte is not ASCII (LMTP asks for BODY=8BITMIME)
    # Set by whoever queued a message naming the file; otherwise the SMTP session removes it.
    taken: bool = False

    def read_text(self) -> bytes:
        """The whole body, unstuffed (blocking; for the rare reader that needs it in memory)."""
        return unstuff(self.path.read_bytes())

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def stored_parts(body: SpooledBody) -> str:
    """What the queue's ``parts`` column holds for a spooled body (read back by
    ``mailsvc.relay.delivery.body.PartedBody.from_stored``)."""
    return json.dumps({"spool": body.name, "8bit": body.eight_bit, "size": body.size})


def stored_size(head: bytes, parts: str | None) -> int:
    """A queued message's size: its stored head plus its spool file, if it has one."""
    if not parts or '"spool"' not in parts:
        return len(head)
    return len(head) + int(json.loads(parts).get("size", 0))


def spool_name(parts: str | None) -> str | None:
    """The spool file a ``parts`` value names, if it names one."""
    if not parts or '"spool"' not in parts:
        return None
    name = json.loads(parts).get("spool")
    return str(name) if name else None


class SpoolWriter:
    """Writes one body's lines to a new file as they arrive (blocking writes that land in the
    page cache; ``finish``, which waits for the disk, belongs in a thread)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.name = secrets.token_hex(16) + SUFFIX
        self.path = directory / self.name
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self.size = 0
        self.eight_bit = False

    def write_lines(self, lines: bytes, crlfs: int | None = None) -> None:
        """Add complete CRLF-terminated lines (``crlfs`` of them, if known); the SMTP body
        scan keeps an unterminated last line until it ends."""
        assert self._file is not None
        if not lines:
            return
        lines = normalize_wire(lines, crlfs)
        if not self.eight_bit and not lines.isascii():
            self.eight_bit = True
        self._file.write(lines)
        self.size += len(lines)

    def finish(self) -> SpooledBody:
        """Make the file durable; returns what the queue stores. Blocking."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        fsync_dir(self.directory)
        return SpooledBody(self.name, self.path, self.size, self.eight_bit)

    def discard(self) -> None:
        """Forget the body (refused, cut off, connection lost)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


def remove_orphans(var_dir: Path, referenced: Iterable[str], *, older_than: float) -> list[str]:
    """Delete spool files no queued message names and not touched for ``older_than`` seconds
    (a session may be writing one right now); returns their names. Blocking."""
    directory = spool_dir(var_dir)
    if not directory.is_dir():
        return []
    keep = set(referenced)
    limit = time.time() - older_than
    removed = []
    for path in directory.iterdir():
        if path.name in keep or not path.name.endswith(SUFFIX):
            continue
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:
            continue
    return removed
