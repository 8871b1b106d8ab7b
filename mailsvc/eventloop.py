"""The event loop the service runs on: uvloop when it is installed (a dependency on Linux),
the standard asyncio loop otherwise or when ``MAILSVC_EVENT_LOOP=asyncio`` asks for it.

uvloop's loop (libuv) makes each round trip of an SMTP session cheaper: measured +17 % messages
per second for one client connection of 1 KB messages (docs/benchmarks.md). Everything in
mailsvc is plain asyncio, so either loop runs it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def choice() -> str:
    """ "uvloop" or "asyncio": what :func:`run` will use."""
    if os.environ.get("MAILSVC_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    if choice() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (None: nothing runs) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
