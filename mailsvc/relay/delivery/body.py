"""Message bodies whose large attachments live once on disk instead of once per recipient.

A distribution sends the same pack of documents to every councillor. Each queued message keeps
only its own head (headers, the personal text and HTML, the opening of the multipart); the
attachments are MIME parts encoded once into files under ``<var_dir>/documents/parts/`` and
streamed after the head at delivery time. Memory per delivery stays at one read chunk, however
large the pack.

The head ends with the first ``--boundary`` line; each part file holds the part's headers, a
blank line and base64 lines of 76 characters, ending with CRLF. No line of a part file starts
with a dot, so no dot-stuffing is needed while streaming them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mailsvc.storage.spool import fsync_dir, spool_path, unstuff
from mailsvc.tmpfiles import writer_tmp

# 57 input bytes make one 76-character base64 line; read whole lines at a time.
_LINE_INPUT = 57
_READ_LINES = 1024 * 16  # ~1 MiB of output per chunk
CHUNK = 1024 * 1024


def documents_dir(var_dir: Path) -> Path:
    return var_dir / "documents"


def parts_dir(var_dir: Path) -> Path:
    return documents_dir(var_dir) / "parts"


def private_dirs(var_dir: Path, directory: Path) -> None:
    """Create ``directory`` under the documents store, it and the store 0700 (only the
    service reads documents and message parts)."""
    root = documents_dir(var_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (root, *directory.relative_to(root).parents, directory.relative_to(root)):
        target = root / path
        if target.stat().st_mode & 0o777 != 0o700:
            target.chmod(0o700)


def private_file(path: Path) -> BinaryIO:
    """A new file open for writing, 0600 whatever the umask."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def encode_part(source: Path, part_headers: bytes, var_dir: Path) -> str:
    """Encode ``source`` as a base64 MIME part with ``part_headers`` (CRLF-terminated lines,
    without the blank line) into the parts directory, once; returns the part's name.

    The name is derived from the headers and the content's digest, so the same document with the
    same headers is encoded once for every distribution that carries it. Written to a temporary
    file, fsync'd and renamed: a part file is either complete or absent.
    """
    # The LMTP client sends part files as they are, without CRLF conversion or dot-stuffing;
    # base64 lines qualify by construction, the headers are checked.
    crlf = part_headers.count(b"\r\n")
    if crlf != part_headers.count(b"\n") or not part_headers.endswith(b"\r\n"):
        raise ValueError("part headers must be CRLF-terminated lines")
    if part_headers.startswith(b".") or b"\n." in part_headers:
        raise ValueError("a part header line starts with a dot")
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    name = hashlib.sha256(part_headers + b"\0" + digest.digest()).hexdigest() + ".part"
    directory = parts_dir(var_dir)
    target = directory / name
    if target.exists():
        return name
    private_dirs(var_dir, directory)
    tmp = writer_tmp(target)
    with source.open("rb") as src, private_file(tmp) as out:
        out.write(part_headers + b"\r\n")
        while block := src.read(_LINE_INPUT * _READ_LINES):
            encoded = base64.b64encode(block)
            lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
            lines.append(b"")  # so that the last line ends with CRLF too
            out.write(b"\r\n".join(lines))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    fsync_dir(directory)
    return name


@dataclass(frozen=True)
class PartedBody:
    """A head stored with the message plus attachment parts stored once on disk; or, for a
    large message received over SMTP, its head plus its body in one spool file
    (``mailsvc.storage.spool``: ``boundary`` is then empty and ``wire`` true)."""

    head: bytes
    boundary: str
    files: tuple[Path, ...]
    wire: bool = False  # the files are dot-stuffed already (spool files)
    eight_bit: bool = False  # a file holds bytes that are not ASCII

    @classmethod
    def from_stored(cls, head: bytes, parts_json: str, var_dir: Path) -> PartedBody:
        data = json.loads(parts_json)
        if "spool" in data:
            path = spool_path(var_dir, str(data["spool"]))
            return cls(head, "", (path,), wire=True, eight_bit=bool(data.get("8bit")))
        directory = parts_dir(var_dir)
        files = []
        for name in data["files"]:
            if "/" in name or name.startswith("."):
                raise ValueError(f"bad part name {name!r}")
            files.append(directory / name)
        return cls(head, str(data["boundary"]), tuple(files))

    @staticmethod
    def to_stored(boundary: str, names: list[str]) -> str:
        return json.dumps({"boundary": boundary, "files": names})

    def tail(self) -> Iterator[tuple[Path, bytes]]:
        """Everything after the head: each part file, with the boundary line that follows it."""
        if not self.boundary:
            for path in self.files:
                yield path, b""
            return
        closing = f"--{self.boundary}--\r\n".encode("ascii")
        between = f"--{self.boundary}\r\n".encode("ascii")
        for i, path in enumerate(self.files):
            yield path, closing if i == len(self.files) - 1 else between

    def check(self) -> None:
        """Raise FileNotFoundError when a part file is missing (before the transaction)."""
        for path in self.files:
            if not path.is_file():
                raise FileNotFoundError(f"attachment part {path} is missing")

    @property
    def size(self) -> int:
        return len(self.head) + sum(p.stat().st_size + len(s) for p, s in self.tail())

    async def tail_chunks(self) -> AsyncIterator[bytes]:
        """Everything after the head: each part file, then the boundary line after it."""
        for path, separator in self.tail():
            with path.open("rb") as fh:
                while block := await asyncio.to_thread(fh.read, CHUNK):
                    yield block
            yield separator

    async def to_bytes(self, prefix: bytes = b"") -> bytes:
        """The whole message after ``prefix`` (for the smarthost, whose client wants it in one
        piece: the DKIM signature fields go in the same buffer, not in a copy of it)."""
        out = [prefix, self.head]
        async for block in self.tail_chunks():
            out.append(block)
        if self.wire:  # the client stuffs what it sends
            return b"".join((prefix, self.head, unstuff(b"".join(out[2:]))))
        return b"".join(out)

    def text_chunks(self) -> Iterator[bytes]:
        """What ``to_bytes`` returns, a chunk at a time (blocking: for a thread). A spool
        file is unstuffed in pieces of whole lines, so no line's dot is judged by half."""
        yield self.head
        for path, separator in self.tail():
            with path.open("rb") as fh:
                carry = b""
                while block := fh.read(CHUNK):
                    if not self.wire:
                        yield block
                        continue
                    data = carry + block
                    cut = data.rfind(b"\r\n") + 2  # 1 when there is none: nothing whole yet
                    if cut < 2:
                        carry = data
                        continue
                    yield unstuff(data[:cut])
                    carry = data[cut:]
                if carry:
                    yield unstuff(carry)
            yield separator

    @property
    def spool_file(self) -> Path | None:
        """The spool file this body owns (removed once the message is settled), if any."""
        return self.files[0] if self.wire else None
