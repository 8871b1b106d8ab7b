"""The backup file: a gzip-compressed tar whose last member, ``MANIFEST.json``, lists every
other member with its size and SHA-256 (and says what the backup holds).

Written under a temporary name beside the target, 0600 from its creation (it holds passwords
and keys), and renamed into place only when complete. Read back in one pass into a staging
directory, hashing as it goes; nothing outside the staging directory is touched until every
member matched the manifest, so a damaged or tampered archive changes nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import queue
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mailsvc.errors import MailsvcError
from mailsvc.storage.spool import fsync_dir

FORMAT = "mailsvc-backup"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
# gzip level 6: most of level 9's ratio on LDIF and SQLite pages at about a third of its time.
COMPRESSLEVEL = 6
_CHUNK = 1024 * 1024
_MANIFEST_MAX = 256 * 1024 * 1024  # a manifest of millions of mail files is still below this


class BackupError(MailsvcError):
    """A backup could not be made or restored; the message says why and what to do."""


class _Hashing:
    """A file object that hashes what is read from it (tarfile reads members through it)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data


class _GzipInBackground:
    """A write-only file object that gzips what it is given in a thread of its own: the tar
    writer reads and hashes the next files while the previous blocks are compressed (zlib and
    hashlib release the GIL), as ``tar | gzip`` does in two processes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._gzip = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESSLEVEL)
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # 8 MiB in flight
        self._pending = bytearray()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._compress, name="backup-gzip", daemon=True)
        self._thread.start()

    def _compress(self) -> None:
        while (block := self._blocks.get()) is not None:
            if self._error is None:
                try:
                    self._gzip.write(block)
                except BaseException as exc:  # reported to the writer at its next call
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> int:
        self._check()
        self._pending += data
        if len(self._pending) >= _CHUNK:
            self._blocks.put(bytes(self._pending))
            self._pending.clear()
        return len(data)

    def close(self) -> None:
        """Compress what is left and write gzip's trailer (raises what the thread met)."""
        if self._pending:
            self._blocks.put(bytes(self._pending))
            self._pending.clear()
        self._blocks.put(None)
        self._thread.join()
        self._check()
        self._gzip.close()

    def abandon(self) -> None:
        self._error = self._error or BackupError("abandoned")
        self._blocks.put(None)
        self._thread.join()


class ArchiveWriter:
    """Members are added one by one; ``finish`` writes the manifest and renames the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older partial file of the same name may have other bits
        self._raw = os.fdopen(fd, "wb")
        self._gzip = _GzipInBackground(self._raw)
        # Stream mode: tarfile only ever writes forward, in 10 KiB records.
        stream: Any = self._gzip  # a write-only file object, which typeshed's IO does not cover
        self._tar = tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT)
        self.members: dict[str, dict[str, Any]] = {}
        self._now = int(time.time())

    def _info(self, name: str, size: int, mtime: float | None = None) -> tarfile.TarInfo:
        if name in self.members or name == MANIFEST:
            raise BackupError(f"internal error: {name} added twice to the backup")
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o600
        info.mtime = int(mtime if mtime is not None else self._now)
        return info

    def add_file(self, name: str, path: Path) -> int:
        """Add ``path`` as ``name``; its size is taken once it is open, so a file replaced by
        rename meanwhile is read whole, as it was. Returns the size."""
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            info = self._info(name, st.st_size, st.st_mtime)
            reader = _Hashing(fh)
            self._tar.addfile(info, reader)  # reads info.size bytes
        self.members[name] = {"size": st.st_size, "sha256": reader.digest.hexdigest()}
        return st.st_size

    def add_bytes(self, name: str, data: bytes) -> None:
        info = self._info(name, len(data))
        reader = _Hashing(io.BytesIO(data))
        self._tar.addfile(info, reader)
        self.members[name] = {"size": len(data), "sha256": reader.digest.hexdigest()}

    def add_dir(self, name: str) -> None:
        """An empty directory the restore must recreate (a Maildir's new/, cur/, tmp/)."""
        info = self._info(name, 0)
        info.type = tarfile.DIRTYPE
        info.mode = 0o700
        self._tar.addfile(info)
        self.members[name] = {"dir": True}

    def finish(self, manifest: dict[str, Any]) -> int:
        """Write the manifest (``members`` filled in here), flush to disk, rename into place;
        returns the archive's size."""
        body = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION, members=self.members)
        data = json.dumps(body, indent=1, ensure_ascii=False, sort_keys=True).encode("utf-8")
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = self._now
        self._tar.addfile(info, io.BytesIO(data))
        self._tar.close()
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.partial, self.path)
        fsync_dir(self.path.parent)
        return self.path.stat().st_size

    def abort(self) -> None:
        try:
            self._tar.close()
        except (OSError, ValueError, tarfile.TarError, BackupError):
            pass  # the partial file goes anyway
        self._gzip.abandon()
        self._raw.close()
        self.partial.unlink(missing_ok=True)


# -- reading --------------------------------------------------------------------------------


def member_path(root: Path, name: str) -> Path:
    """Where member ``name`` goes below ``root``; a name that would leave it is refused."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or not pure.parts or any(p in ("", ".", "..") for p in pure.parts):
        raise BackupError(f"the backup holds a member with an unsafe name: {name!r}")
    return root.joinpath(*pure.parts)


def extract_verified(archive: Path, staging: Path) -> dict[str, Any]:
    """Unpack ``archive`` below ``staging`` (an empty directory), checking every member against
    the manifest; returns the manifest. Raises BackupError on any mismatch: the caller then
    removes ``staging`` and nothing else has changed."""
    seen: dict[str, dict[str, Any]] = {}
    manifest: dict[str, Any] | None = None
    try:
        # Streaming mode: one pass, no seeking back in the compressed data.
        with tarfile.open(archive, mode="r|gz") as tar:
            for info in tar:
                if info.name == MANIFEST:
                    manifest = _read_manifest(tar, info)
                    continue
                if info.name in seen:
                    raise BackupError(f"{archive}: member {info.name} appears twice")
                target = member_path(staging, info.name)
                if info.isdir():
                    target.mkdir(mode=0o700, parents=True, exist_ok=True)
                    seen[info.name] = {"dir": True}
                    continue
                if not info.isfile():
                    raise BackupError(f"{archive}: {info.name} is not a regular file")
                source = tar.extractfile(info)
                assert source is not None  # a regular file always has data
                seen[info.name] = _write(source, target)
    except FileNotFoundError:
        raise BackupError(f"{archive}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise BackupError(f"{archive} is damaged or not a mailsvc backup ({exc})") from None
    if manifest is None:
        raise BackupError(f"{archive} has no {MANIFEST}: it is incomplete or not a mailsvc backup")
    _compare(archive, manifest, seen)
    return manifest


def _read_manifest(tar: tarfile.TarFile, info: tarfile.TarInfo) -> dict[str, Any]:
    if not info.isfile() or info.size > _MANIFEST_MAX:
        raise BackupError(f"{MANIFEST} in the backup is not a file of a sensible size")
    source = tar.extractfile(info)
    assert source is not None
    try:
        manifest = json.loads(source.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BackupError(f"{MANIFEST} in the backup is not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{MANIFEST} does not describe a mailsvc backup")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BackupError(
            f"the backup has format version {version!r}; this mailsvc reads version "
            f"{FORMAT_VERSION}: restore it with the mailsvc version that made it"
        )
    if not isinstance(manifest.get("members"), dict):
        raise BackupError(f"{MANIFEST} lists no members")
    return manifest


def _write(source: IO[bytes], target: Path) -> dict[str, Any]:
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while block := source.read(_CHUNK):
            digest.update(block)
            size += len(block)
            out.write(block)
    return {"size": size, "sha256": digest.hexdigest()}


def _compare(archive: Path, manifest: dict[str, Any], seen: dict[str, dict[str, Any]]) -> None:
    listed: dict[str, Any] = manifest["members"]
    missing = sorted(set(listed) - set(seen))
    extra = sorted(set(seen) - set(listed))
    changed = sorted(n for n in set(listed) & set(seen) if listed[n] != seen[n])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} not in the manifest (e.g. {extra[0]})")
    if changed:
        problems.append(f"{len(changed)} with another size or SHA-256 (e.g. {changed[0]})")
    if problems:
        raise BackupError(
            f"{archive} does not match its manifest: members {'; '.join(problems)}; "
            "nothing was restored"
        )


def walk_files(root: Path) -> Iterator[Path]:
    """Regular files below ``root`` in a stable order (none if it does not exist)."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path
