"""Several mailsvc nodes on one PostgreSQL database, for ``bench/relay.py --nodes`` and
``bench/distribute.py --nodes``.

- :class:`PrivatePostgres`: a PostgreSQL cluster of the bench's own (Debian's binaries under
  /usr/lib/postgresql/<version>/bin, ``initdb`` into a fresh directory, loopback, a free port,
  run as the ``postgres`` user when the bench runs as root, which PostgreSQL refuses). Its
  processes are the bench's alone, so their CPU time is PostgreSQL's cost of the run. With
  ``MAILSVC_BENCH_PG=postgresql://user@host:port/db`` (libpq form, a role that may create
  databases) that server is used instead and its CPU is not measured.
- :class:`NodeProcesses`: N ``mailsvc serve`` processes (each with its delivery process) on
  one database, each with its own var_dir and ports, in front of the bench's slapd and
  Dovecot: they join through ``database.url``, ``directory.*`` (with the stack's directory
  passwords) and ``delivery.lmtp_*``.
- :class:`NodesTarget`: bench/relay.py's target for them: the load is spread over the nodes'
  SMTP ports, session by session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from relay_procs import child_pids, cpu_seconds, peak_rss_bytes, reset_peak

from mailsvc import secret_store
from mailsvc.config import Settings
from mailsvc.stack import free_ports

LOOPBACK = "127.0.0.1"
PG_ENV = "MAILSVC_BENCH_PG"
PG_USER = "postgres"


def pg_bindir() -> Path:
    """Debian's newest PostgreSQL server binaries."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    if not found:
        raise SystemExit("no PostgreSQL server under /usr/lib/postgresql (apt install postgresql)")
    return found[-1].parent


def parse_nodes(spec: str | None) -> list[int]:
    if not spec:
        return []
    try:
        counts = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--nodes {spec!r}: expected e.g. 1,2") from None
    if not counts or any(n < 1 or n > 8 for n in counts):
        raise SystemExit(f"--nodes {spec!r}: node counts from 1 to 8")
    return counts


class PrivatePostgres:
    """The bench's own PostgreSQL server, or the one MAILSVC_BENCH_PG names."""

    def __init__(self) -> None:
        self.external = os.environ.get(PG_ENV, "")
        self.root: Path | None = None
        self.port = 0
        self._as_user = os.geteuid() == 0

    @property
    def admin_url(self) -> str:
        """libpq URL of the server's maintenance database."""
        if self.external:
            return self.external
        return f"postgresql://{PG_USER}@{LOOPBACK}:{self.port}/postgres"

    def _run(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        user = {"user": PG_USER, "group": PG_USER} if self._as_user else {}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            argv, check=True, capture_output=True, text=True, timeout=120, **user, **kwargs
        )

    def start(self) -> None:
        if self.external:
            return
        bindir = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="mpg", dir="/tmp"))
        if self._as_user:
            shutil.chown(self.root, PG_USER, PG_USER)
        (self.port,) = free_ports(1)
        data = self.root / "data"
        self._run(
            [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"]
        )  # fmt: skip
        # Shipped settings (fsync on, synchronous_commit on): the queue's commit is durable,
        # as SQLite's is in the single-node figure. Only the address, port and connection
        # count differ.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={LOOPBACK} "
            "-c max_connections=300 -c shared_buffers=128MB"
        )
        self._run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "postgres.log"),
             "-o", options, "-w", "start"]
        )  # fmt: skip

    def create_database(self) -> str:
        """A fresh database: its SQLAlchemy URL (asyncpg)."""
        name = "bench" + uuid.uuid4().hex[:10]
        subprocess.run(
            ["psql", "-qX", self.admin_url, "-c", f"CREATE DATABASE {name}"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        base = self.admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return f"{base}/{name}"

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer, checkpointer…): empty for an
        external server."""
        if self.root is None:
            return []
        try:
            postmaster = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [postmaster, *child_pids(postmaster)]

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server so far (reaped backends included), or None."""
        pids = self.pids()
        return cpu_seconds(pids) if pids else None

    def stop(self) -> None:
        if self.root is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(
                [str(pg_bindir() / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop"]
            )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


def node_env(
    base_env: dict[str, str], settings: Settings, var_dir: Path, database_url: str, name: str
) -> dict[str, str]:
    """A joining node's environment on top of the single node's (stack ports, load limits):
    its own var_dir, ports and id, the shared database and the stack's directory passwords."""
    smtp, submission = free_ports(2)
    env = dict(base_env)
    env.update(
        {
            "MAILSVC_VAR_DIR": str(var_dir),
            "MAILSVC_DATABASE__URL": database_url,
            "MAILSVC_DIRECTORY__URL": settings.ldap_url,
            "MAILSVC_DIRECTORY__ADMIN_PASSWORD": secret_store.admin_password(settings),
            "MAILSVC_DIRECTORY__READER_PASSWORD": secret_store.reader_password(settings),
            "MAILSVC_DELIVERY__LMTP_HOST": settings.lmtp_address[0],
            "MAILSVC_DELIVERY__LMTP_PORT": str(settings.lmtp_address[1]),
            "MAILSVC_SMTP__PORT": str(smtp),
            "MAILSVC_SUBMISSION__PORT": str(submission),
            "MAILSVC_WEB__ENABLED": "false",
            "MAILSVC_CLUSTER__NODE_ID": name,
        }
    )
    return env


def greets(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            ok = sock.recv(512).startswith(b"220")
            sock.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


class NodeProcesses:
    """``count`` `mailsvc serve` processes on ``database_url``."""

    def __init__(
        self,
        settings: Settings,
        base_env: dict[str, str],
        database_url: str,
        count: int,
        tree: Path,
        root: Path,
    ) -> None:
        self.settings = settings
        self.tree = tree
        self.count = count
        self.envs = []
        self.var_dirs = []
        for i in range(count):
            var_dir = root / f"node{i + 1}"
            var_dir.mkdir(parents=True, exist_ok=True)
            self.var_dirs.append(var_dir)
            self.envs.append(node_env(base_env, settings, var_dir, database_url, f"node{i + 1}"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def ports(self) -> list[int]:
        return [int(env["MAILSVC_SMTP__PORT"]) for env in self.envs]

    def start(self, timeout: float = 90.0) -> None:
        """The first node alone (it makes the schema), then the others."""
        for i, env in enumerate(self.envs):
            log = (self.var_dirs[i] / "serve.log").open("ab")
            with log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "mailsvc.cli", "serve"],
                        cwd=self.tree,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            if i == 0:
                self._wait(0, timeout)
        for i in range(1, self.count):
            self._wait(i, timeout)

    def _wait(self, i: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        port = self.ports[i]
        while not greets(port):
            if self.procs[i].poll() is not None or time.monotonic() > deadline:
                log = (self.var_dirs[i] / "serve.log").read_text(errors="replace")
                raise RuntimeError(f"node{i + 1} did not start:\n{log[-3000:]}")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """Every node's serve process and delivery process."""
        found = []
        for proc in self.procs:
            if proc.poll() is None:
                found += [proc.pid, *child_pids(proc.pid)]
        return found

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def idle_cost(
    pids: Callable[[], list[int]], postgres: PrivatePostgres, seconds: float = 5.0
) -> tuple[float, float]:
    """CPU ms per second of the idle nodes and of PostgreSQL meanwhile (after a settling
    second): the fixed cost that every message rate pays on top of its per-message cost."""
    time.sleep(1.0)
    nodes0, db0 = cpu_seconds(pids()), postgres.cpu_seconds() or 0.0
    time.sleep(seconds)
    nodes1, db1 = cpu_seconds(pids()), postgres.cpu_seconds() or 0.0
    return 1000 * (nodes1 - nodes0) / seconds, 1000 * (db1 - db0) / seconds


def make_target(
    target_base: type,
    settings: Settings,
    base_env: dict[str, str],
    postgres: PrivatePostgres,
    count: int,
    tree: Path,
) -> object:
    """bench/relay.py's Target for ``count`` nodes on a fresh database of ``postgres``.

    ``target_base``: relay.py's Target class (passed in: relay.py runs as __main__)."""

    class NodesTarget(target_base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.nodes = NodeProcesses(
                settings,
                base_env,
                postgres.create_database(),
                count,
                tree,
                settings.var_dir / f"nodes{count}",
            )
            self.nodes.start()
            super().__init__(f"pg×{count}", self.nodes.ports[0])
            self.ports = self.nodes.ports
            self.postgres = postgres
            self.idle_ms = idle_cost(self.nodes.pids, postgres)
            print(
                f"  {self.name}: idle, the nodes use {self.idle_ms[0]:.1f} ms CPU per second and "
                f"PostgreSQL {self.idle_ms[1]:.1f} (heartbeats, lease renewals, polling)",
                flush=True,
            )

        def pids(self) -> list[int]:
            return self.nodes.pids()

        def db_cpu_seconds(self) -> float | None:
            return postgres.cpu_seconds()

        def reset_peak(self) -> None:
            for pid in self.pids():
                reset_peak(pid)

        def peak_rss(self, sampled: int) -> int:
            return max(sampled, sum(peak_rss_bytes(pid) for pid in self.pids()))

        def stop(self) -> None:
            self.nodes.stop()

    return NodesTarget()
