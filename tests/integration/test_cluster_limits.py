"""The limits are the database's, not a node's: two services on one PostgreSQL database count
failed AUTH attempts, failed web logins and a councillor's sending volume together."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailsvc.app import Service, start_service
from mailsvc.config import Settings
from provisioning.directory import Directory
from tests.integration.cluster_nodes import first_node, other_node
from tests.integration.conftest import make_message
from tests.integration.test_submission import auth_plain, tls_client
from tests.integration.test_web_clerk import sign_in

# Several nodes on one PostgreSQL whatever the suite's database: run in the PostgreSQL pass.
pytestmark = [pytest.mark.asyncio, pytest.mark.postgresql_only]


@pytest.fixture
def settings(settings: Settings, pg_url: str) -> Settings:
    return first_node(settings, pg_url).with_changes(submission={"messages_per_hour": 3, "port": 0})


@pytest.fixture
async def nodes(
    settings: Settings, directory: Directory, tmp_path: Path
) -> Any:  # AsyncIterator[tuple[Service, Service]]
    a = await start_service(settings)
    b = await start_service(other_node(settings, tmp_path / "b", "node-b"))
    yield a, b
    await b.stop()
    await a.stop()


def _auth(port: int, login: str, password: str, source: str) -> int:
    with tls_client(port, source) as client:
        code, _ = client.docmd("AUTH", "PLAIN " + auth_plain(login, password))
        return int(code)


async def test_failed_auth_attempts_on_two_nodes_count_together(
    nodes: tuple[Service, Service], settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    a, b = nodes
    author = await add_councillor("Wiesław", "Wytrwały")
    limit = settings.web.login_attempts
    # Wrong passwords from several networks, to one node and the other in turn.
    for n in range(limit):
        node = (a, b)[n % 2]
        code = await asyncio.to_thread(
            _auth, node.submission_port, author.address, "zle", f"127.0.1.{n + 1}"
        )
        assert code == 535
    # Neither node checks the right password now: both know of all the failures.
    for node, source in ((a, "127.0.2.1"), (b, "127.0.2.2")):
        code = await asyncio.to_thread(
            _auth, node.submission_port, author.address, author.password, source
        )
        assert code == 454, node.settings.cluster.node_id


async def test_the_web_login_limit_holds_across_nodes(
    nodes: tuple[Service, Service],
    settings: Settings,
    directory: Directory,
    add_councillor: Callable[..., Any],
) -> None:
    a, b = nodes
    clerk = await add_councillor("Urszula", "Źdźbło-Urzędnik")
    await directory.sync_group(settings.web.clerks_group, [clerk.dn], "Urzędnicy")
    clients = [
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{n.web_port}", timeout=60.0) for n in (a, b)
    ]
    try:
        for n in range(settings.web.login_attempts):
            answer = await sign_in(clients[n % 2], clerk.address, "wrong")
            assert answer.status_code == 401
        for client in clients:  # right, but too late, on either node
            assert (await sign_in(client, clerk.address, clerk.password)).status_code == 429
    finally:
        for client in clients:
            await client.aclose()


async def test_a_councillors_hourly_sending_limit_is_one_for_all_nodes(
    nodes: tuple[Service, Service], add_councillor: Callable[..., Any]
) -> None:
    a, b = nodes
    author = await add_councillor("Jan", "Piszący")

    def submit(port: int) -> int:
        with tls_client(port) as client:
            client.login(author.address, author.password)
            message = make_message("jan@example.org", "Pismo")
            del message["From"]
            message["From"] = author.address
            try:
                client.send_message(message, author.address, ["jan@example.org"])
            except smtplib.SMTPDataError as exc:
                return int(exc.smtp_code)
            return 250

    # messages_per_hour = 3: two through one node, one through the other, then neither.
    codes = [await asyncio.to_thread(submit, n.submission_port) for n in (a, b, a, b, a)]
    assert codes == [250, 250, 250, 451, 451]
