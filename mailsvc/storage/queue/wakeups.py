"""Wake-ups between nodes: ``LISTEN mailsvc_queue`` on a connection of its own (PostgreSQL).

Every enqueue on PostgreSQL notifies the channel in its own transaction (``leases.notify``),
naming the routes it queued deliveries on; the notification reaches the listeners at the
commit, never before the rows are visible. Each node listens on one dedicated asyncpg
connection (outside the engine's pool: a listening connection must stay open) and hands the
routes to a callback, which wakes that node's dispatcher for each route — one claim round per
route however many notifications arrive meanwhile (an ``asyncio.Event`` that is already set
stays set), never every worker.

The listener is only a shortcut: a connection that drops is opened again after a pause that
grows from 0.5 to 30 seconds, and meanwhile the dispatchers' polling finds the mail (they look
at least every few seconds anyway). After a reconnection every route is woken once, for
what was queued while nobody listened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import URL, make_url

from mailsvc.eventloop import cancel_and_wait
from mailsvc.storage.queue.leases import CHANNEL

log = logging.getLogger(__name__)

_PAUSE_FIRST = 0.5
_PAUSE_MAX = 30.0
# A quiet connection is checked this often (a silently dead peer raises no event otherwise).
_KEEPALIVE = 30.0
_CONNECT_TIMEOUT = 10.0


def asyncpg_dsn(url: str | URL) -> str:
    """The SQLAlchemy URL (``postgresql+asyncpg://…``) as a DSN asyncpg itself takes."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class QueueListener:
    """``LISTEN mailsvc_queue``, calling ``wake(routes)`` for each notification."""

    def __init__(
        self, url: str | URL, wake: Callable[[Sequence[str]], None], routes: Sequence[str]
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._wake = wake
        self._routes = tuple(routes)
        self._task: asyncio.Task[None] | None = None
        # Set while the connection listens (tests wait for it).
        self.listening = asyncio.Event()
        self.notifications = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-listener")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.notifications += 1
        routes = [r for r in payload.split(",") if r in self._routes] or self._routes
        self._wake(routes)

    async def _run(self) -> None:
        # Imported here: a SQLite node never loads the driver.
        import asyncpg  # type: ignore[import-untyped]

        pause = _PAUSE_FIRST
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening.set()
                if pause > _PAUSE_FIRST:
                    log.info("queue wake-ups: listening again")
                    self._wake(self._routes)  # what was queued while nobody listened
                pause = _PAUSE_FIRST
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), _KEEPALIVE)
                        break
                    await asyncio.wait_for(conn.execute("SELECT 1"), _CONNECT_TIMEOUT)
                raise ConnectionError("the listening connection was closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                log.warning(
                    "queue wake-ups: not listening (%s); polling meanwhile, again in %.1f s",
                    exc,
                    pause,
                )
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 5.0)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _PAUSE_MAX)
