"""This node's identity among several `mailsvc serve` processes sharing one database.

``cluster.node_id`` when set; otherwise a name made once from the host name and a random
suffix, kept in ``var_dir/node-id`` so that a restarted node is the same node (it takes back
its own claims at once instead of waiting for their leases to expire).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket

from mailsvc.config import Settings
from mailsvc.tmpfiles import writer_tmp

NODE_ID_FILE = "node-id"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def node_id(settings: Settings) -> str:
    """This node's id (created and kept under var_dir on first use)."""
    if settings.cluster.node_id:
        return settings.cluster.node_id
    path = settings.var_dir / NODE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text(encoding="ascii").strip()
        if kept:
            return kept
    host = _UNSAFE.sub("-", socket.gethostname().split(".")[0]).strip("-.") or "node"
    made = f"{host[:48]}-{secrets.token_hex(3)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = writer_tmp(path)
    tmp.write_text(made + "\n", encoding="ascii")
    try:
        os.link(tmp, path)  # another process made it first: theirs is the node's id
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    finally:
        tmp.unlink()
    return made
