"""`mailsvc queue …` and `mailsvc capture list` as an operator runs them beside the service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mailsvc import templating
from mailsvc.app import Service, start_service
from mailsvc.cli.main import main
from mailsvc.config import Settings
from provisioning.directory import Directory

from .smtp_sink import Sink, running_sink
from .test_cli import run_cli
from .test_outbound import EXTERNAL, submitted, wait_status

BODY_MARKER = "Treść."


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with running_sink() as s:
        yield s


@pytest.fixture
async def outbound(settings: Settings, directory: Directory, sink: Sink) -> AsyncIterator[Service]:
    svc = await start_service(settings.with_changes(smarthost={"port": sink.port}), scheduler=False)
    yield svc
    await svc.stop()


@pytest.fixture
async def inline_outbound(
    settings: Settings, directory: Directory, sink: Sink
) -> AsyncIterator[Service]:
    """Delivery in the test's own process, where a monkeypatch can break it."""
    svc = await start_service(
        settings.with_changes(smarthost={"port": sink.port}, delivery={"separate_process": False}),
        scheduler=False,
    )
    yield svc
    await svc.stop()


async def cli(settings: Settings, *args: str) -> Any:
    return await asyncio.to_thread(run_cli, settings, *args)


async def test_a_bounce_that_cannot_be_written_keeps_a_dead_letter_that_retry_redelivers(
    inline_outbound: Service,
    sink: Sink,
    settings: Settings,
    add_councillor: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    author = await add_councillor("Maria", "Wiśniewska")
    sink.handler.rcpt_replies[EXTERNAL] = "550 5.1.1 no such user"
    # An unexpected error while handling the failure: the bounce template has gone missing.
    monkeypatch.setattr(templating, "TEMPLATES_DIR", tmp_path)
    queue_id = await inline_outbound.queue.enqueue(
        author.address, [EXTERNAL], submitted(author.address, EXTERNAL, "Wniosek"), origin="x"
    )
    inline_outbound.workers.wake()
    await wait_status(inline_outbound, queue_id, lambda s: s == ["dead"])

    listed = await cli(settings, "queue", "list", "--status", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["queue_id"], r["recipient"], r["status"]) for r in rows] == [
        (queue_id, EXTERNAL, "dead")
    ]

    shown = await cli(settings, "queue", "show", queue_id)
    assert shown.returncode == 0, shown.stderr
    assert f"<{author.address}>" in shown.stdout and f"<{EXTERNAL}>" in shown.stdout
    assert "TemplatesNotFound" in shown.stdout  # the traceback of the error
    assert "550 5.1.1 no such user" in shown.stdout  # the reply that led to it
    assert BODY_MARKER not in shown.stdout  # never the body unless asked
    with_body = await cli(settings, "queue", "show", queue_id, "--body")
    assert "Subject: Wniosek" in with_body.stdout

    # The cause is fixed and the address accepted now: the operator retries.
    monkeypatch.undo()
    sink.handler.rcpt_replies.clear()
    retried = await cli(settings, "queue", "retry", queue_id)
    assert retried.returncode == 0, retried.stderr
    assert queue_id in retried.stdout and "dead" in retried.stdout
    inline_outbound.workers.wake()  # serve also finds it by polling, within seconds
    detail = await wait_status(inline_outbound, queue_id, lambda s: s == ["delivered"])
    assert detail.status == "done" and detail.error is None
    assert [m.rcpt_tos for m in sink.handler.messages] == [[EXTERNAL]]


async def test_an_unexpected_client_error_is_dead_and_delete_removes_it(
    outbound: Service, settings: Settings
) -> None:
    # A corrupt row (a control character in an address) makes the SMTP client raise. (Not a
    # NUL: no PostgreSQL text column can hold one, so such a row cannot exist there.)
    queue_id = await outbound.queue.enqueue(
        "a@example.org", ["bad\x01address@gmina.example"], b"Subject: x\r\n\r\nx\r\n", origin="x"
    )
    outbound.workers.wake()
    await wait_status(outbound, queue_id, lambda s: s == ["dead"])
    shown = await cli(settings, "queue", "show", queue_id, "--json")
    detail = json.loads(shown.stdout)
    assert detail["status"] == "dead" and "ValueError" in detail["error"]
    assert "body" not in detail and detail["body_kept"] is True

    deleted = await cli(settings, "queue", "delete", queue_id)
    assert deleted.returncode == 0, deleted.stderr
    assert queue_id in deleted.stdout and "<a@example.org>" in deleted.stdout
    assert await outbound.queue.show(queue_id) is None
    again = await cli(settings, "queue", "delete", queue_id)
    assert again.returncode == 1 and queue_id in again.stderr


async def test_retry_all_deferred_makes_waiting_mail_due_now(
    settings: Settings, directory: Directory, sink: Sink, add_councillor: Callable[..., Any]
) -> None:
    sink.handler.data_replies.append("451 4.3.0 busy")
    slow = settings.with_changes(
        smarthost={"port": sink.port},
        delivery={"retry_initial": 3600.0, "retry_max_interval": 3600.0},
    )
    svc = await start_service(slow, scheduler=False)
    try:
        author = await add_councillor("Adam", "Nowak")
        queue_id = await svc.queue.enqueue(
            author.address, [EXTERNAL], submitted(author.address, EXTERNAL, "Później"), origin="x"
        )
        svc.workers.wake()
        await wait_status(svc, queue_id, lambda s: s == ["deferred"])
        listed = await cli(settings, "queue", "list")
        assert queue_id in listed.stdout and "deferred" in listed.stdout
        assert "451 4.3.0 busy" in listed.stdout

        retried = await cli(settings, "queue", "retry", "--all-deferred")
        assert queue_id in retried.stdout
        svc.workers.wake()
        detail = await wait_status(svc, queue_id, lambda s: s == ["delivered"])
        assert detail.deliveries[0].attempts == 2
        assert "Kolejka jest pusta" in (await cli(settings, "queue", "list")).stdout
        nothing = await cli(settings, "queue", "retry", "--dead")
        assert "Nic do ponowienia" in nothing.stdout
    finally:
        await svc.stop()


async def test_capture_list_shows_what_the_local_capture_kept(
    settings: Settings, directory: Directory, add_councillor: Callable[..., Any]
) -> None:
    from mailsvc.relay.delivery import capture

    local = settings.with_changes(smarthost={"port": 0})
    target = capture.capture_dir(local.var_dir)
    for old in target.glob("*.eml"):
        old.unlink()
    svc = await start_service(local, scheduler=False)
    try:
        author = await add_councillor("Ewa", "Lis")
        queue_id = await svc.queue.enqueue(
            author.address, [EXTERNAL], submitted(author.address, EXTERNAL, "Na zewnątrz"), "x"
        )
        svc.workers.wake()
        await wait_status(svc, queue_id, lambda s: s == ["delivered"])
    finally:
        await svc.stop()
    listed = await cli(settings, "capture", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert [(i["mail_from"], i["recipients"], i["subject"]) for i in items] == [
        (author.address, [EXTERNAL], "Na zewnątrz")
    ]
    assert Path(items[0]["file"]).parent == target


def test_every_queue_command_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = [
        ("queue", "list"),
        ("queue", "show"),
        ("queue", "retry"),
        ("queue", "delete"),
        ("capture", "list"),
    ]
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out and f"mailsvc {' '.join(command)}" in out, command
