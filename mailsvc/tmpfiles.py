"""Temporary names for files written beside their final name, then renamed or linked into place.

Several writers may make the same file at once: processes (the service, the CLI, other nodes on
one var_dir) and threads of one process (content-addressed parts and documents written from
``asyncio.to_thread``). With one shared temporary name, a writer opening it with ``O_TRUNC``
empties the file another writer is about to rename into place, or renames it away under the
other's feet. Each writer gets its own name instead.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path


def writer_tmp(path: Path) -> Path:
    """A hidden name beside ``path`` that no other writer uses (process, thread and a random
    part). It contains ".tmp", which backups skip."""
    unique = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{unique}.tmp")
