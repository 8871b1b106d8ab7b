"""Relay benchmark: mailsvc against a private Postfix, same run, same slapd and Dovecot.

One private stack (mailsvc.stack.LocalStack: slapd + Dovecot on free loopback ports, var_dir in
/tmp) with a few councillors created through mailsvc, and two relays in front of it:

(a) mailsvc: `python -m mailsvc.cli.main serve` in its own process (own SQLite queue in var_dir),
    RCPT checked against slapd, delivery to Dovecot over LMTP;
(b) a private Postfix (bench/relay_postfix.py: own main.cf/master.cf, queue and data directories
    under var_dir, shipped defaults), recipients from the same slapd through an LDAP table,
    delivery to the same Dovecot over LMTP.

Each cell (1 KB and 100 KB messages × 1 and 10 client connections, one recipient each, N
messages, recipients taken in turn) is sent twice to each relay:

1. by Postfix's smtp-source (one process per session, a new connection per message, as
   smtp-source does by default): accepted msg/s (client side) and delivered msg/s end to end
   (until every message is a file in the Dovecot Maildirs), CPU per message, peak RSS;
2. by bench/relay_load.py (asyncio, same pattern), which records p50/p99 accept latency.

A fifth cell, the memory cell, sends one 20 MB message over each of 50 sessions at once
(smtp-source only): peak RSS and delivered msg/s.

Mailboxes are emptied between runs. Goals: mailsvc/Postfix ≥ 1.2 delivered msg/s in the four
small cells; in the memory cell ≥ 1.0 with mailsvc's peak RSS ≤ 300 MB.

    .venv/bin/python bench/relay.py                 # 2000 messages per cell and pass
    .venv/bin/python bench/relay.py --quick         # 300
    .venv/bin/python bench/relay.py --only 1k:10 --targets mailsvc --profile /tmp/prof.txt
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

with warnings.catch_warnings():
    # pyasn1 0.6 deprecates names that ldap3 2.9 still imports.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3  # noqa: F401

from relay_nodes import PrivatePostgres, make_target, parse_nodes  # noqa: E402
from relay_postfix import SMTP_SOURCE, LdapTable, PrivatePostfix, postfix_missing  # noqa: E402
from relay_procs import (  # noqa: E402
    RssSampler,
    busy_cpu_seconds,
    child_pids,
    cpu_seconds,
    peak_rss_bytes,
    reset_peak,
    session_members,
)

from mailsvc import secret_store  # noqa: E402
from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings  # noqa: E402
from mailsvc.stack import LocalStack, free_ports  # noqa: E402

LOOPBACK = "127.0.0.1"
SENDER = "mieszkaniec@example.net"
MB = 1024 * 1024
GOAL_RATIO = 1.2
COUNCILLORS = (
    ("Łukasz", "Żółć"), ("Anna", "Nowak"), ("Piotr", "Kowalski"), ("Małgorzata", "Wiśniewska"),
    ("Krzysztof", "Wójcik"), ("Agnieszka", "Kamińska"), ("Tomasz", "Lewandowski"),
    ("Katarzyna", "Zielińska"), ("Paweł", "Szymański"), ("Ewa", "Dąbrowska"),
    ("Michał", "Kozłowski"), ("Joanna", "Jankowska"), ("Marcin", "Mazur"), ("Beata", "Krawczyk"),
    ("Jakub", "Piotrowski"), ("Zofia", "Grabowska"), ("Adam", "Pawłowski"), ("Iwona", "Michalska"),
    ("Grzegorz", "Król"), ("Halina", "Wieczorek"),
)  # fmt: skip
SIZES = {"1k": 1024, "100k": 100 * 1024, "20m": 20 * MB}
# The memory cell: this many sessions at once, each sending one message of 20 MB.
MEMORY_CELL = ("20m", 50)
GOAL_RATIO_MEMORY = 1.0  # delivered/s against Postfix in the memory cell
GOAL_RSS_MB = 300.0  # mailsvc's peak RSS in the memory cell


@dataclass(frozen=True)
class Cell:
    size_name: str
    sessions: int

    @property
    def size(self) -> int:
        return SIZES[self.size_name]

    @property
    def label(self) -> str:
        unit = self.size_name.upper().replace("K", " KB").replace("M", " MB")
        return f"{unit} × {self.sessions}"

    @property
    def memory(self) -> bool:
        """The memory cell: one large message per session, all sessions at once."""
        return self.size >= MB

    def messages(self, count: int) -> int:
        return self.sessions if self.memory else count


@dataclass
class Run:
    target: str
    cell: str
    messages: int
    accepted_per_s: float | None = None
    delivered_per_s: float | None = None
    delivered: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    latency_client_rate: float | None = None
    peak_rss_mb: float | None = None
    peak_pss_mb: float | None = None
    cpu_ms_per_msg: float | None = None
    backend_cpu_ms_per_msg: float | None = None  # Dovecot + slapd, shared by both relays
    db_cpu_ms_per_msg: float | None = None  # PostgreSQL (--nodes targets)
    client_cpu_ms_per_msg: float | None = None  # smtp-source
    other_cpu_pct: float | None = None  # everything else on the machine, % of one core
    errors: list[str] = field(default_factory=list)


# -- set-up ----------------------------------------------------------------------------------


def isolated_settings() -> tuple[Settings, dict[str, int]]:
    """The embedded default on a fresh var_dir in /tmp and free loopback ports."""
    base = load_settings(DEFAULT_CONFIG, env={})
    names = ("ldap", "imap", "lmtp", "smtp", "submission", "postfix")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    settings = base.with_changes(
        var_dir=Path(tempfile.mkdtemp(prefix="mr", dir="/tmp")),
        stack={
            "host": LOOPBACK,
            "ldap_port": ports["ldap"],
            "imap_port": ports["imap"],
            "lmtp_port": ports["lmtp"],
        },
        smtp={"host": LOOPBACK, "port": ports["smtp"]},
        submission={"port": ports["submission"]},
        provisioning={"send_welcome": False},
    )
    return settings, ports


def ensure_postfix() -> None:
    missing = postfix_missing()
    if not missing:
        return
    print(f"relay bench: {', '.join(missing)} missing; running bench/relay_setup.sh", flush=True)
    subprocess.run(["sh", str(BENCH / "relay_setup.sh")], check=True, timeout=900)
    if postfix_missing():
        raise SystemExit(f"still missing after relay_setup.sh: {', '.join(postfix_missing())}")


async def create_councillors(settings: Settings, count: int) -> list[str]:
    from mailsvc.app import open_parts
    from mailsvc.storage.register import os_audit_context

    addresses = []
    async with open_parts(settings) as parts:
        councillors = parts.councillors()
        for given, surname in COUNCILLORS[:count]:
            created = await councillors.add(given, surname, os_audit_context("bench/relay.py"))
            addresses.append(created.address)
    return addresses


def mailsvc_env(settings: Settings, ports: dict[str, int], tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
    env.update(
        {
            "PYTHONPATH": str(tree),
            "MAILSVC_VAR_DIR": str(settings.var_dir),
            "MAILSVC_STACK__HOST": LOOPBACK,
            "MAILSVC_STACK__LDAP_PORT": str(ports["ldap"]),
            "MAILSVC_STACK__IMAP_PORT": str(ports["imap"]),
            "MAILSVC_STACK__LMTP_PORT": str(ports["lmtp"]),
            "MAILSVC_SMTP__HOST": LOOPBACK,
            "MAILSVC_SMTP__PORT": str(ports["smtp"]),
            "MAILSVC_SUBMISSION__PORT": str(ports["submission"]),
            # A free port: another run (or a developer's `make run`) may hold the default.
            "MAILSVC_WEB__PORT": str(free_ports(1)[0]),
            "MAILSVC_PROVISIONING__SEND_WELCOME": "false",
            # The load comes from one IP: the shipped per-IP rate limit (120/min) would turn a
            # benchmark into a test of the limiter. Postfix ships with no message rate limit.
            "MAILSVC_SMTP__MAX_MESSAGES_PER_IP_PER_MINUTE": "100000000",
            # The memory cell opens 50 sessions from one IP at once: Postfix's shipped limit
            # (smtpd_client_connection_count_limit) is 50, mailsvc's 20.
            "MAILSVC_SMTP__MAX_CONNECTIONS_PER_IP": "50",
        }
    )
    return env


class MailsvcProcess:
    def __init__(
        self, settings: Settings, ports: dict[str, int], tree: Path, patches: list[str]
    ) -> None:
        self.settings = settings
        self.port = ports["smtp"]
        self.env = mailsvc_env(settings, ports, tree)
        self.tree = tree
        self.patches = patches
        self.log = settings.var_dir / "log" / "mailsvc-serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        if self.patches:
            argv = [sys.executable, str(BENCH / "relay_patches.py")]
            argv += [f"--patch={p}" for p in self.patches] + ["serve"]
        else:
            argv = [sys.executable, "-m", "mailsvc.cli", "serve"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.tree,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not greets(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mailsvc serve did not start:\n{tail(self.log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def greets(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            ok = sock.recv(512).startswith(b"220")
            sock.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


# -- mailboxes -------------------------------------------------------------------------------


def maildirs(settings: Settings) -> list[Path]:
    root = settings.var_dir / "mail" / settings.domain
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir()]


def count_delivered(settings: Settings) -> int:
    total = 0
    for box in maildirs(settings):
        for sub in ("new", "cur"):
            try:
                with os.scandir(box / sub) as entries:
                    total += sum(1 for _ in entries)
            except FileNotFoundError:
                pass
    return total


def clean_mailboxes(settings: Settings) -> None:
    """Every pass starts from empty mailboxes: the messages and Dovecot's own files (index,
    transaction log, UID list) alike, which Dovecot makes again at the first delivery. Removing
    only the messages left the index to grow over the run's tens of thousands of deliveries,
    and each pass paid more for Dovecot than the one before (3 ms of Dovecot CPU per 100 KB
    message early in a run, 8 ms late)."""
    for box in maildirs(settings):
        shutil.rmtree(box, ignore_errors=True)
    os.sync()  # the next run should not pay for this run's dirty pages


def wait_delivered(settings: Settings, expected: int, deadline: float) -> tuple[int, float]:
    """Poll the Maildirs until ``expected`` messages are there; (count, monotonic time)."""
    while True:
        count = count_delivered(settings)
        now = time.monotonic()
        if count >= expected or now > deadline:
            return count, now
        time.sleep(0.02)


# -- the load --------------------------------------------------------------------------------


def smtp_source(
    port: int | list[int],
    count: int,
    sessions: int,
    size: int,
    recipients: list[str],
    timeout: float,
) -> list[str]:
    """One smtp-source process per session, each to its own recipient (and, given several
    ports, sessions spread over them in turn); returns errors."""
    ports = port if isinstance(port, list) else [port]
    procs = []
    for i in range(sessions):
        share = count // sessions + (1 if i < count % sessions else 0)
        if share == 0:
            continue
        argv = [SMTP_SOURCE, "-s", "1", "-m", str(share), "-l", str(size)]
        argv += ["-f", SENDER, "-t", recipients[i % len(recipients)], "-M", "bench.example.net"]
        argv += ["-S", "relay benchmark", f"{LOOPBACK}:{ports[i % len(ports)]}"]
        procs.append(
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    errors = []
    end = time.monotonic() + timeout
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            errors.append(f"smtp-source timed out after {timeout:.0f} s")
        if proc.returncode:
            errors.append(f"smtp-source exit {proc.returncode}: {out.decode(errors='replace')}")
    return errors


def latency_client(
    port: int, count: int, sessions: int, size: int, recipients: list[str], timeout: float
) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "relay_load.py"), "--port", str(port)]
    argv += ["--count", str(count), "--sessions", str(sessions), "--size", str(size)]
    argv += ["--to", ",".join(recipients), "--from", SENDER, "--deadline", str(timeout)]
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 30
    )
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        data = {"sent": 0, "errors": 1, "first_errors": [result.stderr[-2000:]]}
    return data


class Target(abc.ABC):
    """A relay under test: its port and how to account for its processes."""

    # Whether the latency pass (bench/relay_load.py, one port) runs for this target.
    latency = True

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        # Where the load goes: several nodes' ports (--nodes), sessions spread over them.
        self.ports = [port]

    def db_cpu_seconds(self) -> float | None:
        """CPU time of the target's database server so far (PostgreSQL), if it has one."""
        return None

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """The processes whose CPU and memory belong to this relay."""

    def reset_peak(self) -> None:
        return None

    def peak_rss(self, sampled: int) -> int:
        return sampled

    def idle(self) -> bool:
        return True


class MailsvcTarget(Target):
    def __init__(self, process: MailsvcProcess) -> None:
        super().__init__("mailsvc", process.port)
        self.process = process

    def pids(self) -> list[int]:
        # serve and its delivery process (delivery.separate_process)
        return [self.process.pid, *child_pids(self.process.pid)]

    def reset_peak(self) -> None:
        for pid in self.pids():
            reset_peak(pid)

    def peak_rss(self, sampled: int) -> int:
        return max(sampled, sum(peak_rss_bytes(pid) for pid in self.pids()))


class PostfixTarget(Target):
    def __init__(self, postfix: PrivatePostfix) -> None:
        super().__init__("postfix", postfix.port)
        self.postfix = postfix

    def pids(self) -> list[int]:
        master = self.postfix.master_pid()
        return session_members(master) if master else []

    def idle(self) -> bool:
        return self.postfix.queue_size() == 0


class Bench:
    def __init__(
        self, settings: Settings, recipients: list[str], backend_sids: list[int], timeout: float
    ) -> None:
        self.settings = settings
        self.recipients = recipients
        self.backend_sids = backend_sids
        self.timeout = timeout

    def backend_pids(self) -> list[int]:
        return [pid for sid in self.backend_sids for pid in session_members(sid)]

    def settle(self, target: Target) -> None:
        deadline = time.monotonic() + 30
        while not target.idle() and time.monotonic() < deadline:
            time.sleep(0.05)
        clean_mailboxes(self.settings)

    def warm_up(self, target: Target, count: int = 50) -> None:
        data = latency_client(target.port, count, 10, 1024, self.recipients, self.timeout)
        wait_delivered(self.settings, data.get("sent", 0), time.monotonic() + 60)
        self.settle(target)

    def run(self, target: Target, cell: Cell, count: int, profile: Path | None = None) -> Run:
        count = cell.messages(count)
        run = Run(target.name, cell.label, count)
        limit = max(self.timeout, 300.0) if cell.memory else self.timeout
        # 1. throughput with smtp-source
        self.settle(target)
        target.reset_peak()
        cpu0 = cpu_seconds(target.pids())
        backend0 = cpu_seconds(self.backend_pids())
        db0 = target.db_cpu_seconds()
        busy0, mine0 = busy_cpu_seconds(), own_cpu_seconds()
        spy = start_profiler(target, profile) if profile else None
        with RssSampler(target.pids) as sampler:
            t0 = time.monotonic()
            run.errors += smtp_source(
                target.ports, count, cell.sessions, cell.size, self.recipients, limit
            )
            t_accepted = time.monotonic()
            delivered, t_delivered = wait_delivered(self.settings, count, t_accepted + limit)
        if spy is not None:
            stop_profiler(spy)
        cpu1 = cpu_seconds(target.pids())
        backend1 = cpu_seconds(self.backend_pids())
        db1 = target.db_cpu_seconds()
        busy1, mine1 = busy_cpu_seconds(), own_cpu_seconds()
        relay, backend = cpu1 - cpu0, backend1 - backend0
        db = db1 - db0 if db0 is not None and db1 is not None else 0.0
        other = (busy1 - busy0) - relay - backend - (mine1[0] - mine0[0]) - (mine1[1] - mine0[1])
        other -= db
        if db0 is not None and db1 is not None:
            run.db_cpu_ms_per_msg = 1000 * db / count
        run.client_cpu_ms_per_msg = 1000 * (mine1[1] - mine0[1]) / count
        run.other_cpu_pct = max(0.0, 100 * other / (t_delivered - t0))
        run.delivered = delivered
        run.accepted_per_s = count / (t_accepted - t0) if not run.errors else None
        if delivered >= count:
            run.delivered_per_s = count / (t_delivered - t0)
        else:
            run.errors.append(f"only {delivered} of {count} delivered within {limit:.0f} s")
        run.cpu_ms_per_msg = 1000 * relay / count
        run.backend_cpu_ms_per_msg = 1000 * backend / count
        run.peak_rss_mb = target.peak_rss(sampler.peak) / MB
        run.peak_pss_mb = sampler.peak_pss / MB
        if cell.memory or not target.latency:  # memory cell, nodes: no latency pass
            self.settle(target)
            return run
        # 2. latency with our own client
        self.settle(target)
        data = latency_client(target.port, count, cell.sessions, cell.size, self.recipients, limit)
        if data.get("errors"):
            run.errors.append(f"latency client: {data.get('first_errors')}")
        if data.get("sent"):
            run.p50_ms = 1000 * data["p50"]
            run.p99_ms = 1000 * data["p99"]
            run.latency_client_rate = data["rate"]
        wait_delivered(self.settings, data.get("sent", 0), time.monotonic() + limit)
        self.settle(target)
        return run


def wait_for_quiet(cores: float, patience: float) -> None:
    """Wait (at most ``patience`` s) until the machine's busy CPU over one second is below
    ``cores``: other work on a shared machine (test suites, builds) skews a run badly."""
    if patience <= 0:
        return
    end = time.monotonic() + patience
    while True:
        before = busy_cpu_seconds()
        time.sleep(1.0)
        busy = busy_cpu_seconds() - before
        if busy < cores:
            return
        if time.monotonic() > end:
            print(f"  (machine still busy: {busy:.2f} cores; going ahead)", flush=True)
            return


def own_cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children: smtp-source and the latency client) CPU seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def start_profiler(target: Target, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists() or not isinstance(target, MailsvcTarget):
        print("  (no py-spy, or not mailsvc: not profiling)")
        return None
    argv = [spy, "record", "--pid", str(target.process.pid), "--subprocesses", "--format", "raw"]
    # --gil: only the thread holding the GIL, i.e. what keeps the one core of mailsvc busy.
    argv += ["--rate", "200", "--gil", "--output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- reporting -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return out.strip().splitlines()[0] if out.strip() else "?"

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MB
    return {
        "cpu": f"{os.cpu_count()} × {model}",
        "memory": f"{mem} MB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postfix": version(["/usr/sbin/postconf", "-d", "-h", "mail_version"]),
        "dovecot": version(["dovecot", "--version"]),
    }


def median_run(attempts: list[Run]) -> Run:
    """The attempt with the median delivered rate (failed attempts count as slowest)."""
    ordered = sorted(attempts, key=lambda r: r.delivered_per_s or 0.0)
    return ordered[(len(ordered) - 1) // 2]


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0 and abs(value) < 10:
        digits = 2  # rates of the memory cell: 1.4/s, not 1/s
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(runs: list[Run], cells: list[Cell]) -> str:
    header = (
        f"{'cell':<13} {'relay':<8} {'accepted/s':>10} {'delivered/s':>11} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'RSS MB':>7} {'PSS MB':>7} {'CPU ms/msg':>10} {'backend':>7} "
        f"{'other %':>7} {'DB ms':>6}"
    )
    lines = [header, "-" * len(header)]
    for cell in cells:
        by = {r.target: r for r in runs if r.cell == cell.label}
        nodes = sorted(name for name in by if name.startswith("pg×"))
        for name in ("mailsvc", "postfix", *nodes):
            r = by.get(name)
            if r is None:
                continue
            lines.append(
                f"{cell.label:<13} {name:<8} {fmt(r.accepted_per_s):>10} "
                f"{fmt(r.delivered_per_s):>11} {fmt(r.p50_ms, 1):>7} {fmt(r.p99_ms, 1):>7} "
                f"{fmt(r.peak_rss_mb, 1):>7} {fmt(r.peak_pss_mb, 1):>7} "
                f"{fmt(r.cpu_ms_per_msg, 2):>10} {fmt(r.backend_cpu_ms_per_msg, 2):>7} "
                f"{fmt(r.other_cpu_pct):>7} {fmt(r.db_cpu_ms_per_msg, 2):>6}"
            )
        m, p = by.get("mailsvc"), by.get("postfix")
        if m and p:
            acc = ratio(m.accepted_per_s, p.accepted_per_s)
            dlv = ratio(m.delivered_per_s, p.delivered_per_s)
            if cell.memory:
                met = (
                    dlv is not None
                    and dlv >= GOAL_RATIO_MEMORY
                    and m.peak_rss_mb is not None
                    and m.peak_rss_mb <= GOAL_RSS_MB
                )
                goal = f"(≥ {GOAL_RATIO_MEMORY} ×, RSS ≤ {GOAL_RSS_MB:.0f} MB)"
            else:
                met = dlv is not None and dlv >= GOAL_RATIO
                goal = f"(≥ {GOAL_RATIO} ×)"
            verdict = f"  {'goal met' if met else 'below goal'} {goal}" if dlv is not None else ""
            lines.append(
                f"{'':<13} {'ratio':<8} {fmt(acc, 2):>10} {fmt(dlv, 2):>11} "
                f"{fmt(ratio(m.p50_ms, p.p50_ms), 2):>7} {fmt(ratio(m.p99_ms, p.p99_ms), 2):>7} "
                f"{fmt(ratio(m.peak_rss_mb, p.peak_rss_mb), 2):>7} "
                f"{fmt(ratio(m.peak_pss_mb, p.peak_pss_mb), 2):>7} "
                f"{fmt(ratio(m.cpu_ms_per_msg, p.cpu_ms_per_msg), 2):>10}{verdict}"
            )
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def parse_cells(spec: str | None) -> list[Cell]:
    all_cells = [Cell(size, sessions) for size in ("1k", "100k") for sessions in (1, 10)]
    all_cells.append(Cell(*MEMORY_CELL))
    if not spec:
        return all_cells
    cells = []
    for item in spec.split(","):
        size, _, sessions = item.strip().lower().partition(":")
        if size not in SIZES or not sessions.isdigit():
            raise SystemExit(f"--only {item!r}: expected e.g. 1k:10,100k:1,20m:50")
        cells.append(Cell(size, int(sessions)))
    return cells


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="mailsvc vs a private Postfix: same slapd, same Dovecot, same run",
    )
    p.add_argument("--messages", type=int, default=2000, help="messages per cell and pass")
    p.add_argument("--quick", action="store_true", help="300 messages per cell and pass")
    p.add_argument("--only", help="cells, e.g. 1k:10,100k:1,20m:50 (default: all five)")
    p.add_argument("--targets", default="mailsvc,postfix", help="mailsvc, postfix or both")
    p.add_argument("--councillors", type=int, default=10, choices=range(1, len(COUNCILLORS) + 1))
    p.add_argument("--timeout", type=float, default=0, help="seconds per pass (default: scaled)")
    p.add_argument("--profile", type=Path, help="py-spy raw profile of mailsvc (--profile-cell)")
    p.add_argument("--profile-cell", default="1k:10", help="the cell to profile (default 1k:10)")
    p.add_argument(
        "--mailsvc-tree", type=Path, default=REPO, help="run mailsvc from this source tree"
    )
    p.add_argument("--patch", action="append", default=[], help="bench/relay_patches.py experiment")
    p.add_argument("--mailsvc-env", action="append", default=[], help="KEY=VALUE for mailsvc serve")
    p.add_argument(
        "--quiet-below",
        type=float,
        default=0.3,
        help="before each run wait until the machine's busy CPU is below this many cores",
    )
    p.add_argument("--quiet-wait", type=float, default=120, help="…for at most this many s")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the var_dir (logs) at the end")
    p.add_argument(
        "--nodes",
        help="also N mailsvc nodes on one PostgreSQL, for each N listed (e.g. 1,2): targets "
        "pg×N (a private PostgreSQL, or MAILSVC_BENCH_PG); cells default to 1k:10,100k:10",
    )
    args = p.parse_args(argv)
    count = 300 if args.quick else args.messages
    node_counts = parse_nodes(args.nodes)
    cells = parse_cells(args.only or ("1k:10,100k:10" if node_counts else None))
    profile_cell = parse_cells(args.profile_cell)[0]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    timeout = args.timeout or max(60.0, count / 10)

    if os.geteuid() != 0:
        print("note: not root; Dovecot and Postfix need root to switch users", file=sys.stderr)
    # Every target's load comes from Postfix's smtp-source: installed whichever is measured.
    ensure_postfix()
    info = machine()
    print("Relay benchmark: mailsvc vs a private Postfix (same slapd, same Dovecot)")
    for key, value in info.items():
        print(f"  {key:<8} {value}")
    print(
        f"  load     {count} messages per cell and pass, 1 recipient each "
        f"(of {args.councillors} councillors), a new connection per message"
    )

    settings, ports = isolated_settings()
    stack = LocalStack(settings)
    mailsvc: MailsvcProcess | None = None
    postfix: PrivatePostfix | None = None
    postgres = PrivatePostgres() if node_counts else None
    node_targets: list[Any] = []
    runs: list[Run] = []  # per cell and relay: the median of its attempts
    all_runs: list[Run] = []
    try:
        stack.up()
        recipients = asyncio.run(create_councillors(settings, args.councillors))
        backend = [s.pid for s in stack.status() if s.pid]
        bench = Bench(settings, recipients, backend, timeout)
        targets_by_name: dict[str, Target] = {}
        if "mailsvc" in targets:
            mailsvc = MailsvcProcess(settings, ports, args.mailsvc_tree.resolve(), args.patch)
            mailsvc.env.update(item.split("=", 1) for item in args.mailsvc_env)
            mailsvc.start()
            targets_by_name["mailsvc"] = MailsvcTarget(mailsvc)
        if "postfix" in targets:
            d = settings.directory
            postfix = PrivatePostfix(
                settings.var_dir / "postfix",
                port=ports["postfix"],
                domain=settings.domain,
                lmtp=settings.lmtp_address,
                ldap=LdapTable(
                    url=settings.ldap_url,
                    search_base=d.councillors_dn,
                    bind_dn=d.reader_dn,
                    bind_password=secret_store.reader_password(settings),
                    person_object_class=d.person_object_class,
                    mail_attribute=d.mail_attribute,
                    status_attribute=d.status_attribute,
                    disabled_value=d.disabled_value,
                ),
            )
            postfix.start()
            targets_by_name["postfix"] = PostfixTarget(postfix)
        if postgres is not None:
            postgres.start()
            base_env = mailsvc_env(settings, ports, args.mailsvc_tree.resolve())
            base_env.update(item.split("=", 1) for item in args.mailsvc_env)
            for n in node_counts:
                target = make_target(
                    Target, settings, base_env, postgres, n, args.mailsvc_tree.resolve()
                )
                node_targets.append(target)
                targets_by_name[target.name] = target
        for target in targets_by_name.values():
            bench.warm_up(target)
        for i, cell in enumerate(cells):
            # Alternate who goes first, so slow drift (page cache, Dovecot indexes) evens out.
            order = list(targets_by_name.values())
            if i % 2:
                order.reverse()
            for target in order:
                profiled = cell == profile_cell and target.name == "mailsvc"
                profile = args.profile if profiled else None
                attempts = []
                for attempt in range(args.repeat):
                    wait_for_quiet(args.quiet_below, args.quiet_wait)
                    print(f"  {cell.label:<12} → {target.name} …", end="", flush=True)
                    try:
                        run = bench.run(target, cell, count, profile if attempt == 0 else None)
                    except Exception as exc:  # keep the other cells; say what went wrong
                        traceback.print_exc()
                        run = Run(target.name, cell.label, count, errors=[repr(exc)])
                    print(
                        f" {fmt(run.accepted_per_s)} accepted/s, "
                        f"{fmt(run.delivered_per_s)} delivered/s, other {fmt(run.other_cpu_pct)} %"
                    )
                    for error in run.errors:
                        print(f"    ! {error[:500]}")
                    attempts.append(run)
                all_runs.extend(attempts)
                runs.append(median_run(attempts))
        print()
        print(table(runs, cells))
        print(
            "\naccepted/s: client side (smtp-source); delivered/s: from the first connection until "
            "every message is a file in the Maildirs;\np50/p99: connect → 250 after the dot "
            "(bench/relay_load.py, a second pass of the same size);\n"
            "RSS: mailsvc VmHWM summed over its two processes, Postfix summed over its "
            "processes; PSS: summed proportional set "
            "size (shared pages split), sampled every 0.1 s;\nCPU ms/msg: the relay's processes; "
            "backend: Dovecot + slapd CPU ms/msg in the same pass; other %: CPU used by anything "
            "else on the machine during the pass (% of one core; high values mean a noisy run);\n"
            "pg×N (--nodes): N mailsvc nodes on one PostgreSQL database, the load's sessions "
            "spread over their SMTP ports (latency pass: to the first node); CPU ms/msg: all their "
            "processes; "
            "DB ms: PostgreSQL's CPU ms/msg (its own cluster)."
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "machine": info,
                        "messages": count,
                        "repeat": args.repeat,
                        "runs": [asdict(r) for r in runs],
                        "attempts": [asdict(r) for r in all_runs],
                    },
                    indent=2,
                )
            )
        if args.profile and args.profile.exists():
            from relay_profile import summarize

            print()
            print(summarize(args.profile))
    finally:
        if mailsvc is not None:
            mailsvc.stop()
        if postfix is not None:
            postfix.stop()
        for target in node_targets:
            target.stop()
        if postgres is not None:
            postgres.stop()
        stack.down()
        if args.keep:
            print(f"kept {settings.var_dir}")
        else:
            shutil.rmtree(settings.var_dir, ignore_errors=True)
    failed = any(r.errors for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
