"""Two or more services on one PostgreSQL database, each with its own var_dir and node id, on the
real slapd and Dovecot of the test stack (shared by the cluster tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mailsvc import secret_store
from mailsvc.app import Service
from mailsvc.config import Settings

# Followers try for the lead often, so that a takeover takes about a second here.
RETRY = 0.5


def first_node(settings: Settings, pg_url: str) -> Settings:
    """The stack's own node (its var_dir holds the stack's secrets) on ``pg_url``."""
    return settings.with_changes(
        database={"url": pg_url},
        cluster={"node_id": "node-a", "leader_retry_seconds": RETRY},
    )


def other_node(first: Settings, var_dir: Path, name: str) -> Settings:
    """Another node joining through database.url, directory.* and the stack's LMTP alone: its
    own var_dir, the directory passwords given explicitly."""
    return first.with_changes(
        var_dir=var_dir,
        directory={
            "admin_password": secret_store.admin_password(first),
            "reader_password": secret_store.reader_password(first),
        },
        cluster={"node_id": name, "leader_retry_seconds": RETRY},
    )


async def wait_until(
    check: Callable[[], Awaitable[Any]], within: float = 20.0, interval: float = 0.1
) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval)


def leaders(services: list[Service]) -> list[str]:
    return [s.settings.cluster.node_id for s in services if s.leadership.role == "leader"]


def cluster_jobs(service: Service) -> list[str]:
    """The cluster-wide jobs scheduled on ``service`` (none on a follower)."""
    assert service.scheduler is not None
    jobs: list[str] = service.scheduler.cluster_jobs_running()
    return jobs
