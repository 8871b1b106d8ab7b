"""`mailsvc cluster status [--json]`: the nodes sharing the database (mailsvc.storage.nodes).

One line per node: its id, host, pid, role, state (up: a heartbeat within three heartbeat
intervals; down: older; stopped: a clean stop), the age of its last heartbeat, the deliveries
it holds in flight and how many of those have an expired lease (due for takeover by another
node). With ``--json`` the same as one object::

    {"nodes": [{"node_id", "host", "pid", "role", "version", "state", "started_at",
                "heartbeat_at", "heartbeat_age_seconds", "stopped_at", "inflight",
                "expired_leases"}],
     "heartbeat_seconds", "down_after_seconds"}

Times in the JSON are UTC (ISO 8601). Works on SQLite too, where the one node is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from mailsvc.app import open_database
from mailsvc.config import Settings
from mailsvc.storage.nodes import DOWN_AFTER_HEARTBEATS, NodeStatus, read_status

_TEXT: dict[str, dict[str, str]] = {
    "header": {
        "pl": "WĘZEŁ                HOST             PID     ROLA      STAN       "
        "SYGNAŁ  W TOKU  WYGASŁE",
        "en": "NODE                 HOST             PID     ROLE      STATE      "
        "BEAT    INFLIGHT EXPIRED",
    },
    "none": {
        "pl": "Żaden węzeł nie działał jeszcze na tej bazie danych.",
        "en": "No node has run on this database yet.",
    },
    "up": {"pl": "działa", "en": "up"},
    "down": {"pl": "nie odpowiada", "en": "down"},
    "stopped": {"pl": "zatrzymany", "en": "stopped"},
    "leader": {"pl": "lider", "en": "leader"},
    "follower": {"pl": "zwykły", "en": "follower"},
    "ago": {"pl": "{seconds} s temu", "en": "{seconds} s ago"},
}


def _t(settings: Settings, key: str, **values: Any) -> str:
    texts = _TEXT.get(key)
    if texts is None:  # a role or state this version has no word for
        return key
    return texts.get(settings.language, texts["pl"]).format(**values)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()


def node_json(node: NodeStatus) -> dict[str, Any]:
    return {
        "node_id": node.node_id,
        "host": node.host,
        "pid": node.pid,
        "role": node.role,
        "version": node.version,
        "state": node.state,
        "started_at": _iso(node.started_at),
        "heartbeat_at": _iso(node.heartbeat_at),
        "heartbeat_age_seconds": node.heartbeat_age_seconds,
        "stopped_at": _iso(node.stopped_at),
        "inflight": node.inflight,
        "expired_leases": node.expired_leases,
    }


def status_json(settings: Settings, status: list[NodeStatus]) -> dict[str, Any]:
    beat = settings.cluster.heartbeat_seconds
    return {
        "nodes": [node_json(n) for n in status],
        "heartbeat_seconds": beat,
        "down_after_seconds": DOWN_AFTER_HEARTBEATS * beat,
    }


def status_lines(settings: Settings, status: list[NodeStatus]) -> list[str]:
    if not status:
        return [_t(settings, "none")]
    lines = [_t(settings, "header")]
    for n in status:
        age = _t(settings, "ago", seconds=f"{n.heartbeat_age_seconds:.0f}")
        lines.append(
            f"{n.node_id:<20.64} {n.host:<16.40} {n.pid:<7} {_t(settings, n.role):<9} "
            f"{_t(settings, n.state):<10} {age:<7} {n.inflight:<8} {n.expired_leases}"
        )
    return lines


async def _status(settings: Settings, args: argparse.Namespace) -> int:
    engine = await open_database(settings)
    try:
        status = await read_status(engine, settings.cluster.heartbeat_seconds)
    finally:
        await engine.dispose()
    if args.json:
        print(json.dumps(status_json(settings, status), ensure_ascii=False, indent=2))
    else:
        print("\n".join(status_lines(settings, status)))
    return 0


def cmd_cluster(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_status(settings, args))


def add_parser(sub: Any) -> None:
    """Register `mailsvc cluster …` on the main parser."""
    p = sub.add_parser(
        "cluster",
        help="the mailsvc nodes sharing the database: heartbeats, roles, claims",
        epilog="example: mailsvc cluster status --json",
    )
    csub = p.add_subparsers(dest="action", required=True)
    a = csub.add_parser(
        "status",
        help="one line per node: role, up/down/stopped, last heartbeat, deliveries in flight",
        epilog="example: mailsvc cluster status",
    )
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=cmd_cluster)
