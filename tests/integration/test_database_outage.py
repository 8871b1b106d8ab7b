"""The PostgreSQL server stops under a running service and comes back: meanwhile SMTP answers
4xx (never 5xx, never 250 for what is not stored), deliveries in progress wait for it, and
afterwards everything that got 250 reaches the mailbox.

The server is a private PostgreSQL cluster made for the test (initdb into a temporary
directory, as the postgres user when the tests run as root: PostgreSQL refuses root), so that
stopping it disturbs nobody else. Residents' messages go in one after another through a real
SMTP client while it is stopped (fast shutdown, as an operator's restart) and started again.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from mailsvc.app import Service
from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings
from mailsvc.stack import free_ports
from mailsvc.stack.postgres import bin_dir

from .conftest import make_message, wait_for_deliveries, wait_for_inbox

STORAGE_451 = b"4.3.0 Message could not be stored, please try again later"
# PostgreSQL's programs as the stack finds them (the newest installed version; `make test`
# installs Debian's postgresql package).
PG_BIN = bin_dir(load_settings(DEFAULT_CONFIG, env={}))


class PrivateCluster:
    """One PostgreSQL cluster in a directory of its own, on loopback and its own port."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.data = base / "data"
        self.port = port
        self.log = base / "server.log"
        self.user: str | None = "postgres" if os.geteuid() == 0 else None

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def create(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\nfsync = off\n"
            )

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        subprocess.run(
            [
                "psql",
                "-qX",
                f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                "-c",
                f"CREATE DATABASE {name}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    base = Path(tempfile.mkdtemp(prefix="mspg", dir="/tmp"))
    (port,) = free_ports(1)
    made = PrivateCluster(base, port)
    try:
        made.create()
        made.start()
        made.create_database("mailsvc")
        yield made
    finally:
        try:
            made.stop("immediate")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass  # not running (a test stopped it, or it never started)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def settings(settings: Settings, cluster: PrivateCluster) -> Settings:
    """The integration settings, on the private cluster (whichever database the suite runs on:
    this test is about PostgreSQL)."""
    return settings.with_changes(database={"url": cluster.url("mailsvc")})


def _send(port: int, to: str, subject: str) -> tuple[int, bytes]:
    """One message in its own session: the reply at the end of DATA (or of the first command
    refused)."""
    msg = make_message(to, subject)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("resident.example.org")
            client.send_message(msg, "jan@example.org", [to])
            return 250, b""
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error
    except smtplib.SMTPRecipientsRefused as exc:
        return next(iter(exc.recipients.values()))
    except smtplib.SMTPSenderRefused as exc:
        return exc.smtp_code, exc.smtp_error


@pytest.fixture
def clients() -> Iterator[ThreadPoolExecutor]:
    """The SMTP clients' own threads: the service shares the test's event loop and its default
    executor (its directory lookups run there), which blocked clients must not fill."""
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="smtp-client")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


async def test_postgresql_stopped_under_the_service_gives_4xx_then_recovers_without_loss(
    clients: ThreadPoolExecutor,
    service: Service,
    settings: Settings,
    cluster: PrivateCluster,
    add_councillor: Callable[..., Any],
) -> None:
    account = await add_councillor("Awaria", "Bazy")
    replies: dict[str, tuple[int, bytes]] = {}

    loop = asyncio.get_running_loop()

    async def send(subject: str) -> tuple[int, bytes]:
        reply = await loop.run_in_executor(
            clients, _send, service.smtp_port, account.address, subject
        )
        replies[subject] = reply
        return reply

    assert (await send("przed"))[0] == 250
    # A burst taken at once: their deliveries are in progress when the server goes away
    # (fast shutdown: every session is ended, then it stops listening), and more messages
    # arrive meanwhile.
    burst = await asyncio.gather(*(send(f"seria {n}") for n in range(8)))
    assert [code for code, _ in burst] == [250] * 8, burst
    stop = asyncio.create_task(asyncio.to_thread(cluster.stop, "fast"))
    during = 0
    while not stop.done() or during < 5:
        await send(f"w trakcie {during}")
        during += 1
        if stop.done():
            await asyncio.sleep(0.2)
    await stop
    down = [replies[f"w trakcie {n}"] for n in range(during)]
    refused = [r for r in down if r[0] != 250]
    assert refused, down
    for code, text in refused:
        # Temporary (the sender tries again), and saying what failed.
        assert (code, text) == (451, STORAGE_451), (code, text)
    assert await send("po zatrzymaniu") == (451, STORAGE_451)
    # It comes back: the next message is taken at once.
    cluster.start()
    after = await send("po powrocie")
    assert after[0] == 250, after
    # Residents' servers retry what got 4xx; everything that got 250 is in the mailbox.
    for subject, (code, _) in list(replies.items()):
        if code != 250:
            assert (await send(subject + " ponownie"))[0] == 250
    accepted = sorted(s for s, (code, _) in replies.items() if code == 250)
    inbox = await wait_for_inbox(
        settings, account.address, account.password, count=len(accepted), within=60
    )
    subjects = [str(message_from_bytes(raw)["Subject"]) for raw in inbox]
    missing = [s for s in accepted if s not in subjects]
    assert not missing, (missing, subjects)
    # Delivered at least once each; a copy delivered twice (its outcome lost with the server)
    # is reported here rather than hidden.
    duplicates = sorted({s for s in subjects if subjects.count(s) > 1})
    if duplicates:
        print(f"delivered twice (at-least-once): {duplicates}")
    rows = await wait_for_deliveries(service.queue, {"delivered"}, count=len(accepted), within=60)
    assert sum(r.status == "delivered" for r in rows) == len(accepted), rows
