"""uvicorn inside the service's own event loop: started and stopped like the SMTP servers.

Not a thread and not a subprocess: the web app shares the loop (and so the database engine and
the queue) with the rest of mailsvc. uvicorn's ``Server`` is embedded with three changes from its
command-line behaviour: it does not take over SIGINT/SIGTERM (the service owns its signals), a
failed bind raises an error instead of exiting the process, and the access log is off because
every URL it would log carries a token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from mailsvc.errors import MailsvcError

# How long start() waits for the socket to be bound, and stop() for requests in flight.
START_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10


class WebServerError(MailsvcError, OSError):
    """The web server could not start (typically: the address is already in use)."""


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn Server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """One ASGI app served on ``host:port``; ``port`` is the bound port (also for port 0)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._host = host
        self._requested_port = port
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            log_config=None,  # keep the service's logging configuration as it is
            access_log=False,  # URLs carry tokens
            lifespan="off",
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound; only known once ``start()`` has returned."""
        if self._port is None:
            raise RuntimeError("WebServer.port: the server has not been started")
        return self._port

    async def start(self) -> None:
        """Bind and begin serving; returns once the socket accepts connections."""
        if self._task is not None:
            raise RuntimeError("WebServer.start: already started")
        self._task = asyncio.create_task(
            self._serve(), name=f"web {self._host}:{self._requested_port}"
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        try:
            while not self._server.started:
                if self._task.done():
                    task, self._task = self._task, None
                    task.result()  # raises the start-up error
                    raise WebServerError(self._cannot_listen("the server stopped while starting"))
                if loop.time() > deadline:
                    raise WebServerError(self._cannot_listen("timed out"))
                await asyncio.sleep(0.01)
        except BaseException:
            await self.stop()  # also when start() itself is cancelled: leave no server behind
            raise
        sockets = self._server.servers[0].sockets
        self._port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), and close every socket."""
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        await task

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit:
            # uvicorn calls sys.exit() when it cannot bind; that must not end the service.
            raise WebServerError(self._cannot_listen("see the error logged above")) from None

    def _cannot_listen(self, why: str) -> str:
        return (
            f"web server: cannot listen on {self._host}:{self._requested_port} ({why}); "
            "is another process using the port? Change web.port or stop that process."
        )


def web_server(app: ASGIApp, host: str, port: int) -> WebServer:
    """A stopped ``WebServer`` for ``app``; ``await start()`` binds it (port 0: any free port)."""
    return WebServer(app, host, port)
