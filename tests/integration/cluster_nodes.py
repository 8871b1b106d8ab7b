"""Several nodes on one PostgreSQL database for the cluster tests: real `mailsvc serve` processes
(:class:`ClusterNodes`, test_cluster_nodes.py) and, at the end, settings and helpers for services
started in the test's own process (test_cluster_leader.py).

Every node is the worktree's own ``mailsvc serve`` in a process of its own (with its delivery
child: ``delivery.separate_process`` stays on), with its own var_dir and free ports, in front of
the session's one slapd and one Dovecot. A node gets only what the issue's contract names —
``database.url``, ``directory.*`` and ``delivery.lmtp_*`` — plus its own var_dir, ports and
``cluster.*`` (see :meth:`ClusterNodes.join_env`); what a test tunes (fast retries, no
acknowledgements) comes on top from :meth:`ClusterNodes.tuning_env`.

What else a node turned out to need, beyond the contract's keys:

- ``directory.admin_password`` and ``directory.reader_password``: empty means "the secret kept
  in *this* node's var_dir/secrets", which only the node that ran `mailsvc stack up` has.

A node is killed as a machine dies: SIGKILL to the serve process and to its delivery process
(which runs in a session of its own, so a kill of the serve process alone would leave it to stop
by itself at the end of its pipe, handing its claims back: not a crash).

:class:`LmtpDelay` sits between the nodes and Dovecot's LMTP and holds each of Dovecot's replies
for a while, so that a kill finds deliveries in flight — some of them already stored by Dovecot
and not yet recorded by the node: the window in which a takeover delivers a second copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc import secret_store
from mailsvc.app import Service
from mailsvc.config import Settings
from mailsvc.stack import free_ports
from tests import cli_fork

LOOPBACK = "127.0.0.1"
# The worktree's own console script, beside the interpreter running the tests.
MAILSVC = Path(sys.executable).parent / "mailsvc"
START_TIMEOUT = 90.0


PORT_ATTEMPTS = 4


def port_env(smtp: int, submission: int, web: int, metrics: int) -> dict[str, str]:
    """A node's listening addresses as settings."""
    return {
        "MAILSVC_SMTP__HOST": LOOPBACK,
        "MAILSVC_SMTP__PORT": str(smtp),
        "MAILSVC_SUBMISSION__PORT": str(submission),
        "MAILSVC_WEB__HOST": LOOPBACK,
        "MAILSVC_WEB__PORT": str(web),
        "MAILSVC_METRICS__PORT": str(metrics),
    }


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (its delivery process), from /proc."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


async def smtp_greets(port: int, within: float = 2.0) -> bool:
    """True when a 220 greeting comes from ``port``."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), within)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), within)
        writer.write(b"QUIT\r\n")
        return line.startswith(b"220")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class Node:
    """One `mailsvc serve` process of the cluster."""

    name: str
    var_dir: Path
    smtp_port: int
    submission_port: int
    web_port: int
    metrics_port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def log(self) -> Path:
        return self.var_dir / "serve.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The serve process and its delivery process (alive ones)."""
        if not self.running:
            return []
        return [self.pid, *_children(self.pid)]

    def new_ports(self) -> None:
        """Fresh free ports for this node (its settings included)."""
        self.smtp_port, self.submission_port, self.web_port, self.metrics_port = free_ports(4)
        self.env.update(
            port_env(self.smtp_port, self.submission_port, self.web_port, self.metrics_port)
        )

    async def start(self, within: float = START_TIMEOUT) -> None:
        """Start ``mailsvc serve``; returns once it greets on its SMTP port.

        A port the kernel reported free may be taken by someone else (another test's process,
        an outgoing connection) before the node binds it: when the node says so, it gets fresh
        ports and is started again (a few times at most); any other failure is raised."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                await self._start_once(within)
                return
            except RuntimeError as exc:
                if attempt + 1 == PORT_ATTEMPTS or "address already in use" not in str(exc):
                    raise
                self.new_ports()

    async def _start_once(self, within: float) -> None:
        assert not self.running, f"{self.name} is running"
        self.var_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            log.write(f"\n==== start {self.starts + 1} of {self.name}\n".encode())
            log.flush()
            self.proc = await asyncio.to_thread(
                subprocess.Popen,
                [str(MAILSVC), "serve"],
                env=self.env,
                cwd=self.var_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not await smtp_greets(self.smtp_port):
            if self.proc.poll() is not None or loop.time() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the serve process and its delivery process at once (a machine dying)."""
        assert self.proc is not None and self.running, f"{self.name} is not running"
        pids = self.pids()
        for pid in reversed(pids):  # the child first: it must not see its parent's end
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1
        with self.log.open("ab") as log:
            log.write(f"\n==== SIGKILL {self.kills} of {self.name} (pids {pids})\n".encode())

    async def stop(self, within: float = 30.0) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it takes longer than ``within`` s."""
        if self.proc is None or not self.running:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, within)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"({self.log} unreadable)"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class ClusterNodes:
    """``count`` nodes on ``database_url`` in front of the stack of ``stack`` (its settings).

    ``lmtp``: where the nodes deliver (delivery.lmtp_*); the stack's Dovecot by default.
    ``extra``: MAILSVC_* variables for every node on top of the join and tuning ones.
    """

    stack: Settings
    database_url: str
    base: Path
    count: int = 3
    lease_seconds: float = 4.0
    heartbeat_seconds: float = 1.0
    lmtp: tuple[str, int] | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    _engine: AsyncEngine | None = None

    def __post_init__(self) -> None:
        for i in range(self.count):
            name = f"node{i + 1}"
            smtp, submission, web, metrics = free_ports(4)
            var_dir = self.base / name
            env = self.base_env()
            env.update(self.join_env(var_dir))
            env.update(self.tuning_env())
            env.update({"MAILSVC_CLUSTER__NODE_ID": name})
            env.update(port_env(smtp, submission, web, metrics))
            env.update(self.extra)
            self.nodes.append(Node(name, var_dir, smtp, submission, web, metrics, env))

    # -- settings of a node ----------------------------------------------------------------

    @staticmethod
    def base_env() -> dict[str, str]:
        """The test process's environment without any MAILSVC_* of the developer's."""
        return {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}

    def join_env(self, var_dir: Path) -> dict[str, str]:
        """What a node needs to join the stack: database.url, directory.*, delivery.lmtp_*
        and its own var_dir; nothing else of the first node's settings or files."""
        host, port = self.lmtp or self.stack.lmtp_address
        return {
            "MAILSVC_VAR_DIR": str(var_dir),
            "MAILSVC_DATABASE__URL": self.database_url,
            "MAILSVC_DIRECTORY__URL": self.stack.ldap_url,
            # Empty would mean "generated in my own var_dir": a joining node has to be told.
            "MAILSVC_DIRECTORY__ADMIN_PASSWORD": secret_store.admin_password(self.stack),
            "MAILSVC_DIRECTORY__READER_PASSWORD": secret_store.reader_password(self.stack),
            "MAILSVC_DELIVERY__LMTP_HOST": host,
            "MAILSVC_DELIVERY__LMTP_PORT": str(port),
            "MAILSVC_CLUSTER__LEASE_SECONDS": str(self.lease_seconds),
            "MAILSVC_CLUSTER__HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
        }

    @staticmethod
    def tuning_env() -> dict[str, str]:
        """Test tuning, not needed to join: fast retries, no acknowledgements, no DNS checks,
        every RCPT asks the directory, the distribution table looked at often."""
        return {
            "MAILSVC_LANGUAGE": "en",
            "MAILSVC_SMTP__DIRECTORY_CACHE_SECONDS": "0",
            "MAILSVC_SMTP__AUTHENTICATION_CHECKS": "false",
            "MAILSVC_SMTP__MAX_MESSAGES_PER_IP_PER_MINUTE": "100000",
            "MAILSVC_RELAY__ACKNOWLEDGE": "false",
            "MAILSVC_PROVISIONING__SEND_WELCOME": "false",
            "MAILSVC_DELIVERY__RETRY_INITIAL": "0.3",
            "MAILSVC_DELIVERY__RETRY_MAX_INTERVAL": "1.0",
            "MAILSVC_DISTRIBUTION__SYNC_INTERVAL": "0.5",
            "MAILSVC_DISTRIBUTION__IMAP_CHECK_INTERVAL": "0",
            "MAILSVC_DISTRIBUTION__REMINDERS": "",
        }

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """The first node alone (it makes the schema of an empty database), then the others
        together."""
        await self.nodes[0].start()
        await asyncio.gather(*(node.start() for node in self.nodes[1:]))

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)
        if self._engine is not None:
            await self._engine.dispose()

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def all_logs(self) -> str:
        return "\n".join(f"---- {n.name}\n{n.log_text()}" for n in self.nodes)

    # -- what the nodes report -------------------------------------------------------------

    async def cli(self, *args: str, node: Node | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``mailsvc ARGS`` with a node's settings (the first node's by default)."""
        chosen = node or self.nodes[0]
        return await asyncio.to_thread(cli_fork.run, args, chosen.env, chosen.var_dir)

    async def status(self) -> dict[str, Any]:
        """``mailsvc cluster status --json``, parsed."""
        done = await self.cli("cluster", "status", "--json")
        if done.returncode != 0:
            raise RuntimeError(f"cluster status exit {done.returncode}: {done.stderr[-2000:]}")
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    async def wait_status(
        self, check: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> dict[str, Any]:
        """Poll the cluster status until ``check`` holds (or ``within`` s); the last status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            data = await self.status()
            if check(data) or loop.time() > deadline:
                return data
            await asyncio.sleep(0.3)

    async def leader(self, within: float = 30.0, *, other_than: Node | None = None) -> Node:
        """The node whose status row says "leader" (waits until exactly one does, and with
        ``other_than``, until it is another node: a killed leader's row says "leader" until
        its lease runs out)."""
        gone = other_than.name if other_than is not None else None
        data = await self.wait_status(
            lambda d: len(status_leaders(d)) == 1 and status_leaders(d)[0] != gone, within
        )
        found = status_leaders(data)
        assert len(found) == 1, f"not exactly one leader: {data}"
        return self.node(found[0])

    async def inflight(self, node: Node) -> int:
        """Deliveries the database shows in flight with ``node`` right now (one query, much
        quicker than the status command: for timing a kill)."""
        from sqlalchemy import text

        from mailsvc.storage.db import create_engine

        if self._engine is None:
            self._engine = create_engine(self.database_url)
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                text(
                    "SELECT count(*) FROM deliveries WHERE status = 'inflight' AND node_id = :node"
                ),
                {"node": node.name},
            )
        return int(found or 0)

    async def metrics(self, node: Node) -> dict[str, float]:
        """A running node's /metrics, summed per metric name (labels dropped)."""
        reader, writer = await asyncio.open_connection(LOOPBACK, node.metrics_port)
        try:
            writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            raw = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        sums: dict[str, float] = {}
        for line in raw.decode(errors="replace").split("\r\n\r\n", 1)[-1].splitlines():
            if not line or line.startswith("#"):
                continue
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            with contextlib.suppress(ValueError):
                sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return sums


def status_leaders(status: dict[str, Any]) -> list[str]:
    """Node ids of the status rows that are up and say "leader"."""
    return [n["node_id"] for n in status["nodes"] if n["role"] == "leader" and n["state"] == "up"]


def state_of(status: dict[str, Any], node_id: str) -> str | None:
    for row in status["nodes"]:
        if row["node_id"] == node_id:
            return str(row["state"])
    return None


class LmtpDelay:
    """A TCP proxy in front of Dovecot's LMTP that holds each of its replies ``delay`` s.

    Replies keep their order (one task per direction and connection); what the nodes send
    passes at once. Listening on a free loopback port: :attr:`port` after :meth:`start`.
    """

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.server: asyncio.Server | None = None
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, LOOPBACK, 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        down = asyncio.create_task(self._pipe(up_reader, writer, self.delay))
        up = asyncio.create_task(self._pipe(reader, up_writer, 0.0))
        self._tasks |= {down, up}
        try:
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
            self._tasks -= {down, up}
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(chunk)
                await writer.drain()


# -- services in the test's own process (in-process helpers of test_cluster_leader.py) ------

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
