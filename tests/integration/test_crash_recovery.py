"""250 means stored: kill -9 the service during a load, restart, drain, count every message."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailsvc.config import Settings
from mailsvc.stack import free_ports

from .test_cli import cli_env

ROOT = Path(__file__).resolve().parents[2]


def child_pids(pid: int) -> list[int]:
    """Live children of ``pid`` (the delivery process of a running serve)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


MESSAGES = 2000
CONNECTIONS = 4


class Server:
    """`mailsvc serve` as a separate process that can be killed without warning."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.env = cli_env(
            settings,
            MAILSVC_SMTP__PORT=str(port),
            MAILSVC_SMTP__AUTHENTICATION_CHECKS="false",
            MAILSVC_SMTP__MAX_MESSAGES_PER_IP_PER_MINUTE="100000",
            MAILSVC_SUBMISSION__ENABLED="false",
            MAILSVC_WEB__PORT="0",  # not the default 8025, which a parallel test may hold
            MAILSVC_RELAY__ACKNOWLEDGE="false",
            MAILSVC_DELIVERY__RETRY_INITIAL="0.2",
            MAILSVC_DELIVERY__RETRY_MAX_INTERVAL="1",
        )
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = settings.var_dir / "log" / f"serve-{port}.log"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailsvc.cli", "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("mailsvc serve did not come up:\n" + self.log.read_text())

    def kill(self) -> None:
        """SIGKILL, no warning; the delivery process must then stop by itself (its pipe from
        the killed parent is closed), or it would linger beside the next start's."""
        assert self.proc is not None
        children = child_pids(self.proc.pid)
        assert children, "serve runs its delivery workers in a second process by default"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() for pid in children):
            assert time.monotonic() < deadline, f"delivery process {children} outlived serve"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def send_one(port: int, rcpt: str, n: int) -> bool:
    """One message on its own connection; True only when the server said 250 after DATA."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError):
        return False
    try:

        async def reply() -> str:
            line = b""
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    raise ConnectionError
                if line[3:4] != b"-":
                    return line.decode()

        await reply()
        for command in (b"EHLO load.example.org", b"MAIL FROM:<load@example.org>",
                        f"RCPT TO:<{rcpt}>".encode(), b"DATA"):  # fmt: skip
            writer.write(command + b"\r\n")
            if (await reply())[:1] not in ("2", "3"):
                return False
        writer.write(f"Subject: load-{n}\r\nX-Load-Id: {n}\r\n\r\nmessage {n}\r\n.\r\n".encode())
        ok = (await reply()).startswith("250")
        writer.write(b"QUIT\r\n")
        return ok
    except (OSError, TimeoutError, ConnectionError):
        return False
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ConnectionError):
            pass


def delivered_ids(maildirs: list[Path]) -> Counter[int]:
    """X-Load-Id of every message in the given Maildirs (read from the files: fast)."""
    found: Counter[int] = Counter()
    for maildir in maildirs:
        for sub in ("new", "cur"):
            folder = maildir / sub
            if not folder.exists():
                continue
            for path in folder.iterdir():
                head = path.read_bytes().split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
                for line in head.splitlines():
                    if line.startswith(b"X-Load-Id: "):
                        found[int(line[11:].strip())] += 1
    return found


async def test_every_message_that_got_250_survives_kill_9(
    settings: Settings, add_councillor: Callable[..., Any], record_property: Any
) -> None:
    accounts = [await add_councillor("Jan", f"Obciążony{i}") for i in range(5)]
    (port,) = free_ports(1)
    server = Server(settings, port)
    server.start()
    await server.ready()
    acked: set[int] = set()
    rng = random.Random(20261126)
    kills = 0
    try:
        pending = list(range(MESSAGES))
        next_kill = rng.randint(200, 500)
        sem = asyncio.Semaphore(CONNECTIONS)

        async def one(n: int) -> tuple[int, bool]:
            async with sem:
                return n, await send_one(port, accounts[n % len(accounts)].address, n)

        while pending:
            batch, pending = pending[: CONNECTIONS * 5], pending[CONNECTIONS * 5 :]
            tasks = [asyncio.create_task(one(n)) for n in batch]
            if len(acked) >= next_kill and kills < 3:
                # Kill in the middle of the batch: some messages are mid-DATA, some mid-commit.
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                server.kill()
                kills += 1
                next_kill = len(acked) + rng.randint(300, 600)
                results = await asyncio.gather(*tasks)
                server.start()
                await server.ready()
            else:
                results = await asyncio.gather(*tasks)
            for n, ok in results:
                if ok:
                    acked.add(n)
                else:
                    pending.append(n)  # like a real client: try again later
        assert kills == 3
        # Drain: every acknowledged message must reach its mailbox.
        maildirs = [
            settings.var_dir / "mail" / settings.domain / a.address.split("@")[0] for a in accounts
        ]
        deadline = time.monotonic() + 90
        while True:
            found = delivered_ids(maildirs)
            if acked <= set(found) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        server.stop()
    missing = acked - set(found)
    duplicates = sum(c - 1 for c in found.values() if c > 1)
    record_property("messages_acknowledged", len(acked))
    record_property("duplicates", duplicates)
    print(f"\ncrash test: {len(acked)} acknowledged, {kills} kills, {duplicates} duplicates")
    assert len(acked) == MESSAGES
    assert not missing, f"{len(missing)} messages got 250 but never arrived: {sorted(missing)[:20]}"
    # Duplicates are allowed only for deliveries in flight at a kill (at most a few per kill).
    assert duplicates <= kills * (CONNECTIONS + 2 * settings.delivery.workers)
