"""The running service purges the local capture by itself: `capture-purge` is one of its jobs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from mailsvc.app import start_service
from mailsvc.config import Settings
from mailsvc.relay.delivery import capture
from provisioning.directory import Directory


def captured(directory: Path, age_days: float) -> Path:
    path = capture.store(directory, "", ["jan@example.org"], b"Subject: s\r\n\r\nx\r\n")
    when = time.time() - age_days * 86400
    os.utime(path, (when, when))
    return path


async def test_serve_purges_capture_files_past_the_retention_at_start_up(
    settings: Settings, directory: Directory
) -> None:
    local = settings.with_changes(smarthost={"port": 0, "capture_retention_days": 14})
    target = capture.capture_dir(local.var_dir)
    old, new = captured(target, 15), captured(target, 13)
    svc = await start_service(local)  # with the scheduler: every job runs once at start-up
    try:
        deadline = asyncio.get_running_loop().time() + 10.0
        while True:
            if not old.exists() or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert not old.exists()
        assert new.exists()
    finally:
        await svc.stop()
        new.unlink(missing_ok=True)
