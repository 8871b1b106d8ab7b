"""serve and its delivery process run on uvloop when it is installed."""

from __future__ import annotations

import asyncio

import pytest


def test_the_service_runs_on_uvloop_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailsvc import eventloop

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    monkeypatch.delenv("MAILSVC_EVENT_LOOP", raising=False)
    assert eventloop.choice() == "uvloop"
    assert eventloop.run(loop_module()).startswith("uvloop")
    monkeypatch.setenv("MAILSVC_EVENT_LOOP", "asyncio")
    assert eventloop.choice() == "asyncio"
    assert eventloop.run(loop_module()).startswith("asyncio")
