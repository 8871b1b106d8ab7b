"""`mailsvc cluster status` on the service's own database (SQLite by default: one node)."""

from __future__ import annotations

import asyncio
import json

from mailsvc.app import start_service
from mailsvc.config import Settings
from mailsvc.node import node_id
from provisioning.directory import Directory

from .test_cli import run_cli


async def test_one_node_is_shown_up_while_it_serves_and_stopped_after(
    settings: Settings, directory: Directory
) -> None:
    service = await start_service(settings)
    try:
        proc = await asyncio.to_thread(run_cli, settings, "cluster", "status", "--json")
        assert proc.returncode == 0, proc.stderr
        status = json.loads(proc.stdout)
        (node,) = status["nodes"]
        assert node["node_id"] == node_id(settings)
        assert (node["state"], node["role"], node["inflight"]) == ("up", "leader", 0)
        assert node["stopped_at"] is None
        assert status["down_after_seconds"] == 3 * settings.cluster.heartbeat_seconds
    finally:
        await service.stop()
    proc = await asyncio.to_thread(run_cli, settings, "cluster", "status")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith(node_id(settings))
    assert "zatrzymany" in lines[1]
