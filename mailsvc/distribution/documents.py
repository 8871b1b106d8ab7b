"""The document file store: each file kept once, named by its SHA-256, under var/."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from mailsvc.relay.delivery.body import documents_dir, private_dirs, private_file
from mailsvc.tmpfiles import writer_tmp


def document_path(var_dir: Path, sha256: str) -> Path:
    return documents_dir(var_dir) / sha256[:2] / sha256


def store_document(var_dir: Path, source: Path) -> tuple[str, Path]:
    """Copy ``source`` into the content-addressed store (fsync'd, atomic); (sha256, path)."""
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    sha = digest.hexdigest()
    target = document_path(var_dir, sha)
    if target.exists():
        return sha, target
    private_dirs(var_dir, target.parent)
    tmp = writer_tmp(target)
    with source.open("rb") as src, private_file(tmp) as out:
        shutil.copyfileobj(src, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return sha, target
