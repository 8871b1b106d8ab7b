"""``bench/distribute.py --nodes 1,2``: the same notice sent by `mailsvc serve` nodes, on SQLite
(one node) and on one PostgreSQL database (N nodes), after distribute.py's own rounds.

For each target — ``sqlite×1`` (one serve on SQLite in a var_dir of its own), then ``pg×N`` for
each N listed (N serve processes on a fresh database of the bench's private PostgreSQL, see
bench/relay_nodes.py) — the nodes are started, the round's session is created and the pack
attached through the clerks' code on the target's database, and the notice is scheduled for
now. The scheduler's leader sends it (``distribution.sync_interval`` 0.5 s) and every node's
delivery workers deliver it to the same Dovecot. Measured from the moment it was scheduled until
every councillor's Maildir holds it: wall time, deliveries/s, CPU ms per delivered message of
all the nodes' processes (serve and delivery, user + system, /proc) and, separately, of
PostgreSQL's processes. Mailboxes are wiped between targets; the nodes are stopped after their
target.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from distribute_pack import PackFile
from relay_nodes import NodeProcesses, PrivatePostgres
from relay_procs import cpu_seconds

from mailsvc import secret_store
from mailsvc.config import Settings

SESSION_NUMBER = "N/2027"
REPO = Path(__file__).resolve().parent.parent
STALL_SECONDS = 120.0


@dataclass
class NodesRun:
    target: str
    messages: int
    seconds: float | None = None
    nodes_cpu_s: float = 0.0
    db_cpu_s: float | None = None
    backend_cpu_s: float = 0.0
    error: str = ""

    @property
    def per_s(self) -> float | None:
        return self.messages / self.seconds if self.seconds else None

    def ms_per_msg(self, seconds: float | None) -> float | None:
        return 1000 * seconds / self.messages if seconds is not None and self.messages else None


def base_env(settings: Settings, attach_max_bytes: int) -> dict[str, str]:
    """The nodes' settings besides the join keys: the bench's stack, no welcome, no
    acknowledgements, the distribution table looked at every half second."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
    env.update(
        {
            "MAILSVC_STACK__HOST": settings.stack.host,
            "MAILSVC_STACK__LDAP_PORT": str(settings.stack.ldap_port),
            "MAILSVC_STACK__IMAP_PORT": str(settings.stack.imap_port),
            "MAILSVC_STACK__LMTP_PORT": str(settings.stack.lmtp_port),
            "MAILSVC_SMTP__HOST": settings.smtp.host,
            "MAILSVC_PROVISIONING__SEND_WELCOME": "false",
            "MAILSVC_RELAY__ACKNOWLEDGE": "false",
            "MAILSVC_DISTRIBUTION__ATTACH_MAX_BYTES": str(attach_max_bytes),
            "MAILSVC_DISTRIBUTION__COPIES": "",
            "MAILSVC_DISTRIBUTION__SYNC_INTERVAL": "0.5",
            "MAILSVC_DISTRIBUTION__IMAP_CHECK_INTERVAL": "0",
            "MAILSVC_DISTRIBUTION__REMINDERS": "",
        }
    )
    return env


def count_messages(mail_root: Path) -> int:
    """Messages in every Maildir under ``mail_root`` (<domain>/<local part>/{new,cur})."""
    total = 0
    if not mail_root.is_dir():
        return 0
    for box in (b for domain in mail_root.iterdir() for b in domain.iterdir()):
        for sub in ("new", "cur"):
            try:
                with os.scandir(box / sub) as entries:
                    total += sum(1 for _ in entries)
            except FileNotFoundError:
                pass
    return total


async def schedule_now(clerk: Settings, pack: list[PackFile]) -> None:
    """The session, its pack and a notice due now, through the clerks' code."""
    from mailsvc.app import open_parts

    async with open_parts(clerk) as parts:
        service = parts.distributions()
        tz = ZoneInfo(clerk.distribution.timezone)
        now = datetime.now(tz).replace(tzinfo=None)
        starts = now.replace(hour=10, minute=0, second=0, microsecond=0)
        session = await service.create_session(
            number=SESSION_NUMBER,
            kind="ordinary",
            starts_at=starts.replace(year=now.year + 1),
            place="Sala Sesyjna Ratusza",
            agenda=["Otwarcie", *(f.filename for f in pack)],
            actor="bench",
        )
        for position, f in enumerate(pack, start=2):
            await service.attach(
                session.number, f.path, doc_kind="draft-resolution", agenda_item=position,
                actor="bench",
            )  # fmt: skip
        await service.schedule(session.number, actor="bench")


def run_target(
    name: str,
    settings: Settings,
    env: dict[str, str],
    database_url: str,
    count: int,
    postgres: PrivatePostgres | None,
    pack: list[PackFile],
    expected: int,
    mail_root: Path,
    backend_cpu: Callable[[], float],
    work: Path,
) -> NodesRun:
    run = NodesRun(name, expected)
    root = work / name.replace("×", "x")
    nodes = NodeProcesses(settings, env, database_url, count, REPO, root)
    clerk = settings.with_changes(
        var_dir=nodes.var_dirs[0],  # the first node's machine: on SQLite, its files are the node's
        database={"url": database_url},
        directory={
            "admin_password": secret_store.admin_password(settings),
            "reader_password": secret_store.reader_password(settings),
        },
        distribution={"attach_max_bytes": int(env["MAILSVC_DISTRIBUTION__ATTACH_MAX_BYTES"])},
    )
    try:
        nodes.start()
        time.sleep(2.0)  # leadership settled, start-up work done
        cpu0 = cpu_seconds(nodes.pids())
        db0 = postgres.cpu_seconds() if postgres else None
        back0 = backend_cpu()
        t0 = time.monotonic()
        asyncio.run(schedule_now(clerk, pack))
        last, last_change = 0, time.monotonic()
        while True:
            seen = count_messages(mail_root)
            now = time.monotonic()
            if seen != last:
                last, last_change = seen, now
            if seen >= expected:
                run.seconds = now - t0
                break
            if now - last_change > STALL_SECONDS:
                run.error = f"only {seen} of {expected} delivered"
                break
            time.sleep(0.05)
        run.nodes_cpu_s = cpu_seconds(nodes.pids()) - cpu0
        db1 = postgres.cpu_seconds() if postgres else None
        run.db_cpu_s = db1 - db0 if db0 is not None and db1 is not None else None
        run.backend_cpu_s = backend_cpu() - back0
    except Exception as exc:  # report it beside the other targets' figures
        run.error = repr(exc)[:500]
    finally:
        nodes.stop()
        for var_dir in nodes.var_dirs:
            log = var_dir / "serve.log"
            if run.error and log.exists():
                print(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
        if mail_root.is_dir():
            for child in mail_root.iterdir():
                shutil.rmtree(child)
        os.sync()
    return run


def run_nodes(
    settings: Settings,
    attach_max_bytes: int,
    counts: list[int],
    pack: list[PackFile],
    expected: int,
    mail_root: Path,
    backend_cpu: Callable[[], float],
    work: Path,
) -> list[NodesRun]:
    """sqlite×1, then pg×N for each N in ``counts``. ``backend_cpu``: CPU seconds so far of
    Dovecot and slapd with all their processes."""
    env = base_env(settings, attach_max_bytes)
    runs = []
    sqlite_dir = work / "sqlite-node"
    sqlite_dir.mkdir(parents=True, exist_ok=True)
    sqlite_url = f"sqlite+aiosqlite:///{sqlite_dir / 'mailsvc.db'}"
    print("  nodes: sqlite×1 …", end="", flush=True)
    run = run_target(
        "sqlite×1", settings, env, sqlite_url, 1, None, pack, expected, mail_root,
        backend_cpu, work,
    )  # fmt: skip
    runs.append(run)
    print(f" {fmt(runs[-1].per_s, 1)} deliveries/s {runs[-1].error}")
    postgres = PrivatePostgres()
    try:
        postgres.start()
        for n in counts:
            print(f"  nodes: pg×{n} …", end="", flush=True)
            run = run_target(
                f"pg×{n}", settings, env, postgres.create_database(), n, postgres, pack,
                expected, mail_root, backend_cpu, work,
            )  # fmt: skip
            runs.append(run)
            print(f" {fmt(runs[-1].per_s, 1)} deliveries/s {runs[-1].error}")
    finally:
        postgres.stop()
    return runs


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def report(runs: list[NodesRun], pack_mb: float) -> list[str]:
    lines = [
        "",
        f"Nodes (--nodes): the notice with a {pack_mb:g} MB pack, scheduled for now, sent by the "
        "leader's scheduler and delivered by every node",
        f"{'target':<9} {'messages':>8} {'wall s':>7} {'deliv/s':>8} {'nodes CPU ms/msg':>17} "
        f"{'PostgreSQL ms/msg':>18} {'Dovecot+slapd ms/msg':>21}",
    ]
    for r in runs:
        lines.append(
            f"{r.target:<9} {r.messages:>8} {fmt(r.seconds):>7} {fmt(r.per_s):>8} "
            f"{fmt(r.ms_per_msg(r.nodes_cpu_s), 2):>17} {fmt(r.ms_per_msg(r.db_cpu_s), 2):>18} "
            f"{fmt(r.ms_per_msg(r.backend_cpu_s), 2):>21}" + (f"  ! {r.error}" if r.error else "")
        )
    lines.append(
        "wall s: from scheduling until every Maildir holds the notice (includes up to 0.5 s "
        "until the leader's next look at the table); nodes CPU: serve + delivery processes of "
        "all nodes; PostgreSQL: the bench's own cluster (fsync on)."
    )
    return lines


def as_dicts(runs: list[NodesRun]) -> list[dict[str, Any]]:
    return [
        {
            "target": r.target,
            "messages": r.messages,
            "seconds": r.seconds,
            "per_s": r.per_s,
            "nodes_cpu_ms_per_msg": r.ms_per_msg(r.nodes_cpu_s),
            "db_cpu_ms_per_msg": r.ms_per_msg(r.db_cpu_s),
            "error": r.error,
        }
        for r in runs
    ]
