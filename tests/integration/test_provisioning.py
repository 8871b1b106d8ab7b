"""Provisioning across the term of office, on the real slapd and Dovecot."""

from __future__ import annotations

import asyncio
import json
import smtplib
import threading
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import mailsvc.directory.councillors as councillors_module
from mailsvc.app import Parts, Service
from mailsvc.cli.councillors import run_import
from mailsvc.config import DEFAULT_CONFIG, Settings
from mailsvc.directory.roster_import import InvalidRoster
from mailsvc.mailbox import MailboxLoginFailed, read_inbox
from mailsvc.passwords import hashes_for
from mailsvc.storage.register import os_audit_context
from mailsvc.storage.tables import audit_log, councillors
from provisioning.directory import Directory
from provisioning.errors import DirectoryUnavailable
from provisioning.passwords import generate_password
from provisioning.roster import RosterFileError

from .conftest import make_message, smtp_send, wait_for_inbox
from .test_cli import run_cli

# Run against Samba's AD DC too (make test-samba): what the directory server may change.
pytestmark = pytest.mark.directory

SAMPLE = DEFAULT_CONFIG.parent / "sample-roster.csv"
HEADER = (
    "imię;nazwisko;okręg;klub;funkcja;komisje;początek kadencji;koniec mandatu;"
    "e-mail prywatny;telefon;id"
)
CTX = os_audit_context("pytest")


def roster(tmp_path: Path, *rows: str, name: str = "roster.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode(encoding))
    return path


ROW_ZOLC = "Łukasz;Żółć;Okręg 1;Wspólne Miasto;przewodniczący;Budżetowa;07.05.2024;;;;R01"
ROW_NOWAK = "Anna;Nowak-Kowalska;Okręg 2;Forum;radna;Budżetowa, Rewizyjna;07.05.2024;;;;R02"
ROW_WOJCIK = "Piotr;Wójcik;Okręg 3;Forum;radny;Rewizyjna;07.05.2024;;;;R03"


async def snapshot(parts: Parts) -> tuple[list[tuple[str, bool, str]], int, int]:
    """What a failed import must leave untouched: entries, register rows, audit rows."""
    entries = sorted(
        (e.address, e.active, e.display_name) for e in await parts.directory.list_councillors()
    )
    async with parts.engine.connect() as conn:
        reg = (await conn.execute(select(func.count()).select_from(councillors))).scalar_one()
        aud = (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one()
    return entries, reg, aud


async def test_sample_roster_creates_25_mailboxes_each_with_its_welcome_message(
    parts: Parts, settings: Settings
) -> None:
    _, result, _, _ = await run_import(parts, SAMPLE, quiet=True)
    assert result is not None and not result.errors
    assert len(result.created) == 25
    addresses = {a.address for a in result.created}
    assert len(addresses) == 25
    assert {
        f"lukasz.zolc@{settings.domain}",
        f"anna.nowak-kowalska@{settings.domain}",
        f"jan.kowalski@{settings.domain}",
        f"jan.kowalski2@{settings.domain}",
        f"jan.m.kowalski@{settings.domain}",
    } <= addresses
    assert await parts.deliver_queued() == 25

    async def check(account: Any) -> None:
        inbox = await read_inbox(
            settings.stack.host, settings.stack.imap_port, account.address, account.password
        )
        assert len(inbox) == 1, account.address
        msg = message_from_bytes(inbox[0], policy=policy.default)
        assert str(msg["Subject"]).startswith("Witamy")
        assert msg["To"].addresses[0].addr_spec == account.address
        text = msg.get_body(preferencelist=("plain",))
        assert text is not None
        assert f"/mobileconfig?email={account.address}" in text.get_content()

    await asyncio.gather(*(check(a) for a in result.created))

    # The same file again writes nothing.
    before = await snapshot(parts)
    plan, again, _, _ = await run_import(parts, SAMPLE, quiet=True)
    assert again is not None
    assert plan.changes == 0 and again.unchanged == 25
    assert (again.created, again.updated, again.disabled) == ([], [], [])
    assert await snapshot(parts) == before


async def test_cli_import_json_reports_created_with_passwords(
    settings: Settings, directory: Directory, tmp_path: Path
) -> None:
    path = roster(tmp_path, ROW_ZOLC, ROW_NOWAK)
    proc = await asyncio.to_thread(run_cli, settings, "councillors", "import", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"created", "updated", "disabled", "unchanged", "errors"}
    assert [c["address"] for c in out["created"]] == [
        f"lukasz.zolc@{settings.domain}",
        f"anna.nowak-kowalska@{settings.domain}",
    ]
    assert all(len(c["password"]) >= 16 for c in out["created"])
    again = json.loads(
        (
            await asyncio.to_thread(run_cli, settings, "councillors", "import", str(path), "--json")
        ).stdout
    )
    assert again == {"created": [], "updated": [], "disabled": [], "unchanged": 2, "errors": []}


async def test_dry_run_changes_nothing(parts: Parts, tmp_path: Path) -> None:
    before = await snapshot(parts)
    plan, result, _, addresses = await run_import(
        parts, roster(tmp_path, ROW_ZOLC, ROW_NOWAK), dry_run=True, quiet=True
    )
    assert result is None and len(plan.creates) == 2
    assert sorted(addresses.values())[0].startswith("anna.nowak-kowalska@")
    assert await snapshot(parts) == before


async def test_renamed_councillor_keeps_the_address_and_history_shows_it(
    parts: Parts, settings: Settings, tmp_path: Path
) -> None:
    await run_import(parts, roster(tmp_path, ROW_ZOLC, ROW_WOJCIK), quiet=True)
    corrected = ROW_WOJCIK.replace("Wójcik", "Wójcik-Zieliński")
    plan, result, _, _ = await run_import(
        parts, roster(tmp_path, ROW_ZOLC, corrected, name="r2.csv"), quiet=True, context=CTX
    )
    address = f"piotr.wojcik@{settings.domain}"
    assert result is not None and result.updated == [address]
    assert plan.updates[0].changes["surname"] == ("Wójcik", "Wójcik-Zieliński")
    entry = await parts.directory.find_by_address(address)
    assert entry is not None and entry.surname == "Wójcik-Zieliński"
    assert entry.display_name == "Piotr Wójcik-Zieliński"
    history = await parts.register.history(address)
    assert [h.action for h in history] == ["create", "update"]
    assert history[1].before == {"surname": "Wójcik"}
    assert history[1].after == {"surname": "Wójcik-Zieliński"}
    assert history[1].command == "pytest"


async def test_mandate_ended_in_the_roster_refuses_login_and_rcpt_naming_the_office(
    parts: Parts, service: Service, settings: Settings, tmp_path: Path
) -> None:
    _, result, _, _ = await run_import(parts, roster(tmp_path, ROW_ZOLC, ROW_NOWAK), quiet=True)
    assert result is not None
    nowak = next(a for a in result.created if a.address.startswith("anna."))
    # The login works while the mandate runs.
    await read_inbox(settings.stack.host, settings.stack.imap_port, nowak.address, nowak.password)
    yesterday = (date.today() - timedelta(days=1)).strftime("%d.%m.%Y")
    ended = ROW_NOWAK.replace("07.05.2024;;", f"07.05.2024;{yesterday};")
    _, result2, _, _ = await run_import(
        parts, roster(tmp_path, ROW_ZOLC, ended, name="r2.csv"), quiet=True
    )
    assert result2 is not None and result2.disabled == [nowak.address]
    with pytest.raises(MailboxLoginFailed):
        await read_inbox(
            settings.stack.host, settings.stack.imap_port, nowak.address, nowak.password
        )
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await smtp_send(service.smtp_port, [nowak.address], make_message(nowak.address, "x"))
    code, text = next(iter(info.value.recipients.values()))
    assert code == 550 and text.startswith(b"5.1.6")
    assert settings.office_address.encode() in text
    row = await parts.register.get(nowak.address)
    assert row is not None and row.status == "disabled" and row.end_reason == "mandate ended"


async def test_end_mandate_on_a_future_date_waits_for_the_scheduled_job(
    parts: Parts, settings: Settings, tmp_path: Path
) -> None:
    _, result, _, _ = await run_import(parts, roster(tmp_path, ROW_ZOLC), quiet=True)
    assert result is not None
    zolc = result.created[0]
    service = parts.councillors()
    on = date.today() + timedelta(days=10)
    assert await service.end_mandate(zolc.address, on, "zrzeczenie się mandatu", CTX) is False
    entry = await parts.directory.find_by_address(zolc.address)
    assert entry is not None and entry.active
    # The job finds nothing before the date, and disables the account on it.
    assert await service.apply_due_mandate_ends(CTX, today=on - timedelta(days=1)) == []
    assert await service.apply_due_mandate_ends(CTX, today=on) == [zolc.address]
    entry = await parts.directory.find_by_address(zolc.address)
    assert entry is not None and not entry.active
    with pytest.raises(MailboxLoginFailed):
        await read_inbox(settings.stack.host, settings.stack.imap_port, zolc.address, zolc.password)
    # Running the job again changes nothing (idempotent).
    assert await service.apply_due_mandate_ends(CTX, today=on) == []


async def test_end_mandate_cli_with_a_past_date_applies_at_once(
    settings: Settings, directory: Directory
) -> None:
    add = await asyncio.to_thread(
        run_cli, settings, "councillors", "add", "--given-name", "Ewa", "--surname", "Lis", "--json"
    )
    address = json.loads(add.stdout)["address"]
    proc = await asyncio.to_thread(
        run_cli, settings, "councillors", "end-mandate", address, "--on", "2025-01-31",
        "--reason", "wygaśnięcie",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "2025-01-31" in proc.stdout
    entry = await directory.find_by_address(address)
    assert entry is not None and not entry.active
    listing = json.loads(
        (
            await asyncio.to_thread(run_cli, settings, "councillors", "list", "--all", "--json")
        ).stdout
    )
    assert [(c["address"], c["status"], c["mandate_end"]) for c in listing] == [
        (address, "disabled", "2025-01-31")
    ]
    history = await asyncio.to_thread(run_cli, settings, "councillors", "history", address)
    assert [line.split()[3] for line in history.stdout.splitlines()] == [
        "create",
        "end-mandate",
        "disable",
    ]


async def test_group_addresses_expand_to_current_members_only(
    parts: Parts, service: Service, settings: Settings, tmp_path: Path
) -> None:
    _, result, _, _ = await run_import(
        parts, roster(tmp_path, ROW_ZOLC, ROW_NOWAK, ROW_WOJCIK), quiet=True
    )
    assert result is not None
    await parts.deliver_queued()  # welcome messages first
    accounts = {a.address.split(".")[0]: a for a in result.created}
    budget = f"komisja-budzetowa@{settings.domain}"
    await smtp_send(service.smtp_port, [budget], make_message(budget, "Posiedzenie komisji"))
    for who, expected in (("lukasz", 2), ("anna", 2), ("piotr", 1)):
        a = accounts[who]
        assert len(await wait_for_inbox(settings, a.address, a.password, expected)) == expected
    # The chair's role address reaches the chair.
    chair = f"przewodniczacy@{settings.domain}"
    await smtp_send(service.smtp_port, [chair], make_message(chair, "Do przewodniczącego"))
    z = accounts["lukasz"]
    assert len(await wait_for_inbox(settings, z.address, z.password, 3)) == 3
    # Anna's mandate ends: the committee address no longer reaches her.
    await parts.councillors().end_mandate(accounts["anna"].address, date.today(), "", CTX)
    await smtp_send(service.smtp_port, [budget], make_message(budget, "Drugie posiedzenie"))
    assert len(await wait_for_inbox(settings, z.address, z.password, 4)) == 4
    everyone = f"rada@{settings.domain}"
    await smtp_send(service.smtp_port, [everyone], make_message(everyone, "Do wszystkich"))
    p = accounts["piotr"]
    inbox = await wait_for_inbox(settings, p.address, p.password, 2)
    subjects = [str(message_from_bytes(m, policy=policy.default)["Subject"]) for m in inbox]
    assert subjects[-1] == "Do wszystkich"
    group = await parts.directory.get_group("komisja-budzetowa")
    assert group is not None
    assert all("anna" not in m for m in group.members)


async def test_reset_password_replaces_the_old_one(parts: Parts, settings: Settings) -> None:
    account = await parts.councillors().add("Zofia", "Kamińska", CTX)
    new = await parts.councillors().reset_password(account.address, CTX)
    assert new.password != account.password
    host, port = settings.stack.host, settings.stack.imap_port
    await read_inbox(host, port, account.address, new.password)
    with pytest.raises(MailboxLoginFailed):
        await read_inbox(host, port, account.address, account.password)
    assert [h.action for h in await parts.register.history(account.address)] == [
        "create",
        "reset-password",
    ]


async def test_retention_removes_the_mailbox_and_the_address_is_never_reused(
    parts: Parts, settings: Settings
) -> None:
    service = parts.councillors()
    first = await service.add("Jan", "Nowak", CTX)
    await parts.deliver_queued()
    maildir = settings.var_dir / "mail" / settings.domain / "jan.nowak"
    assert maildir.exists()
    await service.end_mandate(first.address, date.today(), "koniec kadencji", CTX)
    assert await service.remove_expired(CTX) == []  # still within retention
    later = date.today() + timedelta(days=settings.provisioning.retention_days + 1)
    from datetime import datetime

    removed = await service.remove_expired(CTX, now=datetime(later.year, later.month, later.day))
    assert removed == [first.address]
    assert not maildir.exists()
    assert await parts.directory.find_by_address(first.address) is None
    # Another Jan Nowak gets another address.
    second = await service.add("Jan", "Nowak", CTX)
    assert second.address == f"jan.nowak2@{settings.domain}"


async def test_ldap_special_characters_are_stored_literally(
    parts: Parts, settings: Settings, tmp_path: Path
) -> None:
    club = 'KWW "Niezależni" (lista 5) * a\\b, c+d <e> f=g'
    quoted = club.replace('"', '""')
    row = f'Maria;Wiśniewska;Okręg *)(uid=*;"{quoted}";radna;;07.05.2024;;;;R07'
    _, result, _, _ = await run_import(parts, roster(tmp_path, row), quiet=True)
    assert result is not None and not result.errors
    entry = await parts.directory.find_by_address(f"maria.wisniewska@{settings.domain}")
    assert entry is not None
    assert entry.club == club
    assert entry.district == "Okręg *)(uid=*"
    # A filter-injection attempt in a looked-up address finds nobody instead of everybody.
    assert await parts.directory.find_by_address("*)(mail=*") is None


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([ROW_ZOLC, "Jan;;Okręg 1;;radny;;07.05.2024;;;;R09"], "roster.csv:3: column 'nazwisko'"),
        ([ROW_ZOLC, ROW_ZOLC.replace("R01", "R01")], "roster.csv:3"),
        ([ROW_ZOLC.replace(";;;;R01", ";;nie-email;;R01")], "column 'e-mail prywatny'"),
        ([ROW_ZOLC.replace(";;;;R01", ";;;12;R01")], "column 'telefon'"),
        ([ROW_ZOLC.replace("Budżetowa", "Kosmiczna")], "column 'komisje'"),
        ([ROW_ZOLC.replace("07.05.2024", "31.02.2024")], "column 'początek kadencji'"),
        ([ROW_ZOLC.replace("07.05.2024", "kiedyś")], "column 'początek kadencji'"),
    ],
)
async def test_invalid_rows_are_named_and_nothing_is_applied(
    parts: Parts, tmp_path: Path, rows: list[str], message: str
) -> None:
    await run_import(parts, roster(tmp_path, ROW_WOJCIK, name="first.csv"), quiet=True)
    before = await snapshot(parts)
    with pytest.raises(InvalidRoster) as info:
        await run_import(parts, roster(tmp_path, *rows), quiet=True)
    assert message in str(info.value)
    assert await snapshot(parts) == before


async def test_skip_invalid_applies_only_the_valid_rows(parts: Parts, tmp_path: Path) -> None:
    bad = "Jan;;Okręg 1;;radny;;07.05.2024;;;;R09"
    _, result, problems, _ = await run_import(
        parts, roster(tmp_path, ROW_ZOLC, bad), skip_invalid=True, quiet=True
    )
    assert result is not None and len(result.created) == 1
    assert len(problems) == 1 and "roster.csv:3" in problems[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ((HEADER + "\r\n").encode(), "header but no councillors"),
        (b"\x00\x01\x02PK\x03\x04" * 100, "binary"),
        (b"", "empty"),
    ],
)
async def test_unreadable_files_get_a_file_error_and_nothing_is_applied(
    parts: Parts, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    before = await snapshot(parts)
    with pytest.raises(RosterFileError) as info:
        await run_import(parts, path, quiet=True)
    assert str(path) in str(info.value) and message in str(info.value)
    assert await snapshot(parts) == before


async def test_huge_file_is_refused_before_reading(parts: Parts, tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as fh:  # sparse: 1 GB on paper, nothing on disk
        fh.truncate(1024**3)
    with pytest.raises(RosterFileError) as info:
        await run_import(parts, path, quiet=True)
    assert "huge.csv" in str(info.value) and "limit" in str(info.value)


async def test_windows_1250_roster_is_detected(
    parts: Parts, settings: Settings, tmp_path: Path
) -> None:
    path = roster(tmp_path, ROW_ZOLC, ROW_NOWAK, encoding="cp1250")
    _, result, _, _ = await run_import(parts, path, quiet=True)
    assert result is not None
    entry = await parts.directory.find_by_address(f"lukasz.zolc@{settings.domain}")
    assert entry is not None and entry.display_name == "Łukasz Żółć"


async def test_directory_unreachable_is_reported_as_such(
    parts: Parts, tmp_path: Path, local_stack: Any
) -> None:
    server = local_stack.services[0]  # slapd, or Samba's AD DC
    local_stack.stop_service(server)
    try:
        with pytest.raises(DirectoryUnavailable, match="unreachable"):
            await run_import(parts, roster(tmp_path, ROW_ZOLC), quiet=True)
    finally:
        local_stack.start_service(server)


class FailingDirectory(Directory):
    """The real directory, except that the directory 'goes away' after ``ok`` additions."""

    def __init__(self, base: Directory, ok: int) -> None:
        super().__init__(base.config)
        self.ok = ok

    async def add_many(self, items: Any) -> list[str | Exception]:
        allowed, self.ok = items[: max(self.ok, 0)], self.ok - len(items)
        done = await super().add_many(allowed)
        fault = DirectoryUnavailable("directory ldap://test unreachable: injected fault")
        return done + [fault] * (len(items) - len(allowed))


async def test_a_failure_part_way_leaves_whole_entries_and_a_rerun_completes(
    parts: Parts, settings: Settings, tmp_path: Path
) -> None:
    path = SAMPLE
    flaky = FailingDirectory(parts.directory, ok=10)
    broken = Parts(settings, parts.engine, flaky, parts.register, parts.queue)
    try:
        with pytest.raises(DirectoryUnavailable):
            await run_import(broken, path, quiet=True)
    finally:
        await flaky.close()
    entries = await parts.directory.list_councillors()
    assert len(entries) == 10
    # Every entry that exists is complete: its register row and audit record are there too.
    for entry in entries:
        row = await parts.register.get(entry.address)
        assert row is not None and row.external_id == entry.external_id
        assert entry.display_name and entry.district
    _, result, _, _ = await run_import(parts, path, quiet=True)
    assert result is not None and len(result.created) == 15 and not result.errors
    final = await parts.directory.list_councillors()
    assert len(final) == 25
    assert len({e.address for e in final}) == 25
    assert len({e.external_id for e in final}) == 25


async def test_a_connection_in_use_when_the_directory_closes_is_closed_when_it_comes_back(
    directory: Directory,
) -> None:
    # A caller cancelled while its worker thread still talks to slapd (an import stopped by
    # an error elsewhere) leaves the thread running; its connection used to go back into the
    # closed pool and be left unclosed there (a ResourceWarning at some later collection).
    config = directory.config
    directory = Directory(config)
    started, release = threading.Event(), threading.Event()
    held: list[Any] = []

    def slow_read(conn: Any) -> bool:
        held.append(conn)
        started.set()
        release.wait(10)
        return bool(conn.search(config.base_dn, "(objectClass=*)"))

    call = asyncio.ensure_future(directory._ldap.run(slow_read))
    assert await asyncio.to_thread(started.wait, 10)
    call.cancel()
    await directory.close()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The thread finishes after the cancelled caller; wait for it to hand the connection back.
    for _ in range(100):
        if held[0].closed:
            break
        await asyncio.sleep(0.05)
    assert held[0].closed
    # The directory still answers after close, on connections it does not keep open.
    assert await directory.list_councillors() == []
    assert all(conn is None for conn in directory._ldap._pool.queue)


class WaitingDirectory(Directory):
    """The real directory, except that additions wait until ``ready`` is set (or time out)."""

    def __init__(self, base: Directory, ready: asyncio.Event) -> None:
        super().__init__(base.config)
        self.ready = ready

    async def add_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], object_classes: Any = None
    ) -> list[str | Exception]:
        await asyncio.wait_for(self.ready.wait(), timeout=10)
        return await super().add_many(items, object_classes)


async def test_the_next_chunk_is_hashed_while_this_chunk_is_added(
    parts: Parts, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hashing is most of a first import: the next chunk's passwords are hashed while this
    # chunk's entries go to the directory, not after. Two chunks; the first one's additions
    # are held until the second chunk's hashing has begun (they would wait for ever if the
    # import hashed and added in turn).
    monkeypatch.setattr(councillors_module, "_CHUNK", 2)
    second_hashing = asyncio.Event()
    hashed: list[int] = []
    original = hashes_for

    async def counting(settings: Settings, directory: Directory, passwords: Any) -> list[Any]:
        hashed.append(len(passwords))
        if len(hashed) == 2:
            second_hashing.set()
        return await original(settings, directory, passwords)

    monkeypatch.setattr(councillors_module, "hashes_for", counting)
    waiting = WaitingDirectory(parts.directory, second_hashing)
    held = Parts(settings, parts.engine, waiting, parts.register, parts.queue)
    try:
        path = roster(tmp_path, ROW_ZOLC, ROW_NOWAK, ROW_WOJCIK)
        _, result, _, _ = await run_import(held, path, quiet=True)
    finally:
        await waiting.close()
    assert result is not None and not result.errors
    assert hashed == [2, 1] and len(result.created) == 3
    for account in result.created:
        assert await parts.directory.check_password(account.dn, account.password)
        row = await parts.register.get(account.address)
        assert row is not None and row.dn == account.dn


async def test_an_entry_without_a_register_row_is_adopted_not_duplicated(
    parts: Parts, settings: Settings, tmp_path: Path
) -> None:
    # As if a run died between the directory write and the register write.
    await parts.directory.add_councillor(
        local_part="lukasz.zolc",
        address=f"lukasz.zolc@{settings.domain}",
        given_name="Łukasz",
        surname="Żółć",
        password=generate_password(),
        password_hash="{SSHA}x",
        extra={parts.directory.config.external_id_attribute: "R01", "l": "Okręg 1"},
    )
    plan, result, _, _ = await run_import(parts, roster(tmp_path, ROW_ZOLC), quiet=True)
    assert result is not None and result.created == []
    assert result.updated == [f"lukasz.zolc@{settings.domain}"]
    assert (await parts.register.history(result.updated[0]))[0].action == "adopt"
    plan, result, _, _ = await run_import(parts, roster(tmp_path, ROW_ZOLC), quiet=True)
    assert plan.changes == 0


async def test_import_writes_printable_credentials_letters(
    settings: Settings, directory: Directory, tmp_path: Path
) -> None:
    letters = tmp_path / "listy.html"
    path = roster(tmp_path, ROW_ZOLC, ROW_NOWAK)
    proc = await asyncio.to_thread(
        run_cli, settings, "councillors", "import", str(path), "--json", "--letters", str(letters)
    )
    assert proc.returncode == 0, proc.stderr
    created = json.loads(proc.stdout)["created"]
    html = letters.read_text(encoding="utf-8")
    for account in created:
        assert account["address"] in html and account["password"] in html
        assert f"/mobileconfig?email={account['address']}</span>" in html
    assert "Łukasz Żółć" in html and str(settings.stack.imap_port) in html
    assert "/.well-known/autoconfig/mail/config-v1.1.xml</span>" in html


async def test_roster_import_never_disables_office_staff_in_the_clerks_group(
    parts: Parts, settings: Settings, tmp_path: Path, add_councillor: Any
) -> None:
    clerk = await add_councillor("Maria", "Urzędnik")
    stray = await add_councillor("Jan", "Spoza")
    entry = await parts.directory.find_by_address(clerk.address)
    assert entry is not None
    await parts.directory.sync_group(settings.web.clerks_group, [entry.dn], "Urzędnicy")
    plan, result, _, _ = await run_import(parts, roster(tmp_path, ROW_ZOLC), quiet=True)
    assert result is not None and result.disabled == [stray.address]
    disabled = [d.existing.address for d in plan.disables]
    assert stray.address in disabled  # a councillor missing from the roster is disabled
    assert clerk.address not in disabled  # the clerk is not a councillor of the roster
    still = await parts.directory.find_by_address(clerk.address)
    assert still is not None and still.active


async def test_a_council_of_sixty_is_imported_at_once_within_the_directory_timeout(
    parts: Parts, tmp_path: Path
) -> None:
    # A domain controller adds about ten users a second (it checks the policy and hashes each
    # password), serving one connection's queue while the others wait: sent on eight
    # connections with 64 requests in flight each, the adds of a council of 60 left some
    # connection without an answer for longer than directory.timeout (5 s).
    rows = [
        f"Radny{n};Testowy{chr(ord('a') + n % 26)}{n};Okręg {n % 5};;radny;;07.05.2024;;;;T{n:03}"
        for n in range(60)
    ]
    assert parts.settings.directory.timeout == 5.0
    _plan, result, _, _ = await run_import(parts, roster(tmp_path, *rows), quiet=True)
    assert result is not None and result.errors == []
    assert len(result.created) == 60
    assert len(await parts.directory.list_councillors(brief=True)) == 60


async def test_a_large_group_is_written_in_batches_of_only_what_differs(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The council-wide group of a large roster: on AD no request may carry all its members
    # (Samba took over the 5 s directory timeout to add 50,000 at once). Batches of 3 stand in
    # for the dialect's member_batch here (AD's 2,000; OpenLDAP's none); every request is
    # counted.
    await run_import(parts, SAMPLE, quiet=True)
    people = sorted(e.dn for e in await parts.directory.list_councillors())
    assert len(people) == 25
    monkeypatch.setattr(parts.directory.dialect, "member_batch", 3)
    sizes: list[int] = []
    modify = Directory._modify_members

    async def counted(self: Directory, dn: str, changes: list[tuple[Any, list[str]]]) -> None:
        sizes.extend(len(values) for _, values in changes)
        await modify(self, dn, changes)

    monkeypatch.setattr(Directory, "_modify_members", counted)
    directory = parts.directory

    async def members() -> set[str]:
        group = await directory.get_group("proba-duza")
        assert group is not None
        return set(group.members)

    assert await directory.sync_group("proba-duza", people[:10], "Próba")
    assert await members() == {dn.lower() for dn in people[:10]}
    assert sizes == [3, 3, 1]  # 3 in the add itself, then the other 7 in batches
    sizes.clear()
    # 5 leave, 4 join: only those 9 values are sent, none of the 5 who stay.
    assert await directory.sync_group("proba-duza", people[5:14], "Próba")
    assert await members() == {dn.lower() for dn in people[5:14]}
    assert sorted(sizes) == [1, 2, 3, 3]
    sizes.clear()
    assert not await directory.sync_group("proba-duza", people[5:14], "Próba")
    assert sizes == []
