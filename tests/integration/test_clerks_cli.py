"""`mailsvc clerks …` and `mailsvc run`'s sample clerk, on the real slapd, Dovecot and web panel.

Clerks are made through the real command line (a subprocess, as a user runs it), then sign in to
the real web app over HTTP; a roster import must neither see nor touch them.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
import ldap3
import pytest

from mailsvc import resources, secret_store
from mailsvc.app import Parts, start_service
from mailsvc.cli.councillors import run_import
from mailsvc.config import Settings
from mailsvc.stack import free_ports
from mailsvc.stack.supervise import ldap_connection
from mailsvc.storage.clerks import WebStore
from provisioning.directory import Directory
from provisioning.directory.entries import staff_dn

from .test_cli import cli_env, run_cli
from .test_provisioning import ROW_ZOLC, roster
from .test_web_clerk import sign_in

# Run against Samba's AD DC too (make test-samba): what the directory server may change.
pytestmark = pytest.mark.directory

SAMPLE_ROSTER = resources.config_dir() / "sample-roster.csv"


async def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, settings, *args, **env)


async def add_clerk(settings: Settings, login: str, name: str, *extra: str) -> dict[str, Any]:
    made = await cli(settings, "clerks", "add", login, "--name", name, "--json", *extra)
    assert made.returncode == 0, made.stderr
    out: dict[str, Any] = json.loads(made.stdout)
    return out


async def audit(parts: Parts, actor_part: str = "") -> list[tuple[str, str | None]]:
    entries, _ = await WebStore(parts.engine).audit_entries(limit=1000, actor=actor_part)
    return [(e.action, e.address) for e in entries]


async def test_a_clerk_added_by_the_cli_signs_in_and_is_locked_out_once_removed(
    settings: Settings, directory: Directory, parts: Parts
) -> None:
    # The contract form: the login and address are made from the name, as a councillor's are.
    proc = await cli(
        settings, "clerks", "add", "--given-name", "Anna", "--surname", "Nowak", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    made = json.loads(proc.stdout)
    assert made["address"] == f"anna.nowak@{settings.domain}"
    assert made["login"] == "anna.nowak" and len(made["password"]) >= 16
    assert made["url"] == "http://127.0.0.1:8025/"  # the panel of the embedded default
    # In the staff subtree, not among the councillors, and in the clerks group.
    entry = await directory.find_staff(f"anna.nowak@{settings.domain}", "anna.nowak")
    assert entry is not None and entry.active
    assert entry.dn.lower() == staff_dn(directory.config, "anna.nowak").lower()
    assert await directory.list_councillors() == []
    group = await directory.get_group(settings.web.clerks_group)
    assert group is not None and entry.dn.lower() in group.members

    listed = await cli(settings, "clerks", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [
        (c["login"], c["name"], c["in_group"], c["kind"]) for c in json.loads(listed.stdout)
    ] == [("anna.nowak", "Anna Nowak", True, "staff")]
    table = await cli(settings, "clerks", "list")
    row = next(line for line in table.stdout.splitlines() if line.startswith("anna.nowak"))
    assert "Anna Nowak" in row and " tak " in row and "pracownik" in row
    english = await cli(settings, "clerks", "list", MAILSVC_LANGUAGE="en")
    assert "in group" in english.stdout and " yes " in english.stdout

    service = await start_service(settings.with_changes(web={"recheck_minutes": 0}))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
        ) as web:
            answer = await sign_in(web, "anna.nowak", made["password"])
            assert answer.status_code == 303, answer.text
            dashboard = await web.get("/")
            assert dashboard.status_code == 200 and "Anna Nowak" in dashboard.text

            removed = await cli(settings, "clerks", "remove", made["address"])
            assert removed.returncode == 0, removed.stderr
            assert "Usunięto konto urzędnika anna.nowak" in removed.stdout
            # The open session ends at its next check (recheck_minutes = 0: this request).
            gone = await web.get("/")
            assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
            again = await sign_in(web, "anna.nowak", made["password"])
            assert again.status_code == 401 and "Nieprawidłowy login lub hasło" in again.text
    finally:
        await service.stop()

    assert await directory.find_staff(f"anna.nowak@{settings.domain}", "anna.nowak") is None
    group = await directory.get_group(settings.web.clerks_group)
    assert group is not None and entry.dn.lower() not in group.members
    assert json.loads((await cli(settings, "clerks", "list", "--json")).stdout) == []
    actions = await audit(parts)
    address = f"anna.nowak@{settings.domain}"
    assert ("clerk-add", address) in actions and ("clerk-remove", address) in actions
    assert "web-session-ended" in {action for action, _ in actions}


async def test_a_clerk_with_an_address_of_its_own_signs_in_with_either(
    settings: Settings, directory: Directory
) -> None:
    made = await add_clerk(settings, "biuro", "Ewa Żak", "--email", "Ewa.Zak@Urzad.Miasto.example")
    assert made["address"] == "ewa.zak@urzad.miasto.example"
    service = await start_service(settings)
    try:
        for login in ("biuro", f"biuro@{settings.domain}", "ewa.zak@urzad.miasto.example"):
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
            ) as web:
                answer = await sign_in(web, login, made["password"])
                assert answer.status_code == 303, (login, answer.text)
                assert "Ewa Żak" in (await web.get("/")).text
        # A new password from the command line; the old one stops working.
        reset = await cli(settings, "clerks", "reset-password", "biuro", "--json")
        assert reset.returncode == 0, reset.stderr
        fresh = json.loads(reset.stdout)["password"]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
        ) as web:
            assert (await sign_in(web, "biuro", made["password"])).status_code == 401
            assert (await sign_in(web, "biuro", fresh)).status_code == 303
    finally:
        await service.stop()


def staff_container_exists(settings: Settings) -> bool:
    """Whether the staff container exists, asked with a connection of the test's own."""
    d = settings.ldap
    ca_file = Path(d.ca_file) if d.ca_file else None
    conn = ldap_connection(
        settings.ldap_url, d.admin_dn, secret_store.admin_password(settings), ca_file
    )
    assert conn.bind(), conn.result
    try:
        return bool(conn.search(d.staff_dn, "(objectClass=*)", ldap3.BASE, attributes=["1.1"]))
    finally:
        conn.unbind()


# With Active Directory the containers are the domain administrator's: the service account,
# rightly, may neither remove nor make them (the Samba stack's test_samba_stack shows it).
@pytest.mark.openldap_only
async def test_the_stack_makes_the_staff_subtree_and_clerks_add_remakes_it_when_missing(
    settings: Settings, directory: Directory
) -> None:
    assert await asyncio.to_thread(staff_container_exists, settings)  # made with the directory
    await directory.delete(settings.ldap.staff_dn)  # as in a directory made before it
    assert not await asyncio.to_thread(staff_container_exists, settings)
    listed = await cli(settings, "clerks", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
    await add_clerk(settings, "sekretariat", "Sekretariat Rady")
    assert await asyncio.to_thread(staff_container_exists, settings)
    [entry] = await directory.list_staff()
    assert entry.dn.lower().endswith("," + settings.ldap.staff_dn.lower())


# Refusals come from the directory; the audit rows of the two clerks made are checked on both
# databases by test_a_clerk_added_by_the_cli_signs_in_and_is_locked_out_once_removed.
@pytest.mark.no_database
async def test_clerk_commands_refuse_clearly_and_exit_75_without_a_directory(
    settings: Settings, directory: Directory, add_councillor: Callable[[str, str], Any]
) -> None:
    await add_clerk(settings, "sekretariat", "Sekretariat Rady")
    twice = await cli(settings, "clerks", "add", "sekretariat", "--name", "Ktoś Inny")
    assert twice.returncode == 1
    assert "Login sekretariat jest już zajęty" in twice.stderr
    english = await cli(
        settings, "clerks", "add", "sekretariat", "--name", "X Y", MAILSVC_LANGUAGE="en"
    )
    assert english.returncode == 1 and "The login sekretariat is taken" in english.stderr

    councillor = await add_councillor("Łukasz", "Żółć")
    local = councillor.address.split("@")[0]
    taken = await cli(settings, "clerks", "add", local, "--name", "Łukasz Żółć")
    assert taken.returncode == 1 and f"{councillor.address} należy do radnego" in taken.stderr

    unknown = await cli(settings, "clerks", "remove", "nikt")
    assert unknown.returncode == 1 and "Nie ma urzędnika nikt" in unknown.stderr
    # A councillor outside the group is not a clerk either, and keeps the mailbox.
    not_clerk = await cli(settings, "clerks", "remove", councillor.address)
    assert not_clerk.returncode == 1
    assert await directory.find_by_address(councillor.address) is not None

    # Filter and DN metacharacters never reach the directory unescaped: refused as a login.
    for bad in ("Anna Nowak", "*", "a,ou=groups", "anna)(uid=*"):
        refused = await cli(settings, "clerks", "add", bad, "--name", "Anna Nowak")
        assert refused.returncode == 1 and "Login" in refused.stderr, bad
    no_name = await cli(settings, "clerks", "add", "pusty", "--name", "  ")
    assert no_name.returncode == 1 and "--name" in no_name.stderr
    for args in (
        ("--given-name", "Anna"),  # no surname
        ("ktos", "--given-name", "Anna", "--surname", "Nowak"),  # both forms at once
        ("ktos",),  # a login without --name
    ):
        usage = await cli(settings, "clerks", "add", *args)
        assert usage.returncode == 1 and "--given-name" in usage.stderr, args
    # The name form skips a login or address already held (here the councillor's).
    second = await cli(
        settings, "clerks", "add", "--given-name", "Łukasz", "--surname", "Żółć", "--json"
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["address"] == f"lukasz.zolc2@{settings.domain}"
    # ...and as a lookup they are escaped: no entry matches "*".
    star = await cli(settings, "clerks", "remove", "*@x")
    assert star.returncode == 1 and "Nie ma urzędnika" in star.stderr
    assert await directory.find_staff(f"sekretariat@{settings.domain}", "sekretariat")

    (port,) = free_ports(1)
    # Nobody listens there (AD is reached over TLS only: a plain URL is refused as config).
    scheme = "ldaps" if settings.ldap.kind == "ad" else "ldap"
    down = f"{scheme}://127.0.0.1:{port}"
    for args in (("list",), ("add", "ktos", "--name", "Kto Ś"), ("remove", "sekretariat")):
        proc = await cli(settings, "clerks", *args, MAILSVC_DIRECTORY__URL=down)
        assert proc.returncode == 75, (args, proc.stdout, proc.stderr)
        assert "Katalog użytkowników jest niedostępny" in proc.stderr
        assert "Traceback" not in proc.stderr


async def test_a_councillor_in_the_clerks_group_is_listed_and_removal_keeps_the_mailbox(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
) -> None:
    councillor = await add_councillor("Urszula", "Radna")
    await directory.sync_group(settings.web.clerks_group, [councillor.dn], "Urzędnicy")
    await add_clerk(settings, "sekretariat", "Sekretariat Rady")
    listed = json.loads((await cli(settings, "clerks", "list", "--json")).stdout)
    assert [(c["login"], c["kind"], c["in_group"]) for c in listed] == [
        ("sekretariat", "staff", True),
        (councillor.address, "councillor", True),
    ]
    service = await start_service(settings)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
        ) as web:
            answer = await sign_in(web, councillor.address, councillor.password)
            assert answer.status_code == 303, answer.text
    finally:
        await service.stop()
    removed = await cli(settings, "clerks", "remove", councillor.address)
    assert removed.returncode == 0, removed.stderr
    assert "skrzynka radnego zostaje" in removed.stdout
    kept = await directory.find_by_address(councillor.address)
    assert kept is not None and kept.active
    group = await directory.get_group(settings.web.clerks_group)
    assert group is not None and councillor.dn.lower() not in group.members
    assert group.members  # the sample clerk is still there


async def test_a_roster_import_neither_plans_nor_touches_clerks(
    settings: Settings, directory: Directory, parts: Parts, tmp_path: Path
) -> None:
    made = await add_clerk(settings, "anna.nowak", "Anna Nowak")
    before = await directory.find_staff(f"anna.nowak@{settings.domain}", "anna.nowak")
    assert before is not None

    preview = await cli(settings, "councillors", "import", str(SAMPLE_ROSTER), "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert f"anna.nowak@{settings.domain}" not in preview.stdout
    # The roster holds a councillor named Anna Nowak: she gets an address of her own, never
    # the clerk's login.
    nowak = "Anna;Nowak;Okręg 2;Forum;radna;;07.05.2024;;;;R09"
    plan, result, _, addresses = await run_import(
        parts, roster(tmp_path, ROW_ZOLC, nowak), quiet=True
    )
    assert result is not None and not result.errors
    mentioned = (
        set(addresses.values())
        | {u.existing.address for u in plan.updates}
        | {d.existing.address for d in plan.disables}
        | {u.address for u in plan.unchanged}
    )
    assert all(not a.startswith("anna.nowak@") for a in mentioned), mentioned
    assert {c.address for c in result.created} == set(addresses.values())
    # A second import without the councillors disables them, never the clerk.
    plan, result, _, _ = await run_import(parts, roster(tmp_path, ROW_ZOLC), quiet=True)
    assert result is not None and len(result.disabled) == 1
    assert all("anna.nowak@" not in d.existing.address for d in plan.disables)

    after = await directory.find_staff(f"anna.nowak@{settings.domain}", "anna.nowak")
    assert after is not None and after.active and after.dn == before.dn
    assert dict(after.attributes) == dict(before.attributes)
    assert await directory.check_password(after.dn, made["password"])
    group = await directory.get_group(settings.web.clerks_group)
    assert group is not None and after.dn.lower() in group.members


def _run_until_ready(settings: Settings, log: IO[str]) -> tuple[str, subprocess.Popen[str]]:
    """Start `mailsvc run` on the test's stack and free ports; returns what it printed up to
    "accepting mail" and the running process."""
    smtp, submission, web = free_ports(3)
    env = cli_env(
        settings,
        MAILSVC_SMTP__PORT=str(smtp),
        MAILSVC_SUBMISSION__PORT=str(submission),
        MAILSVC_WEB__PORT=str(web),
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailsvc.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if "przyjmuje pocztę" in line:
            return "".join(out), proc
    proc.kill()
    proc.wait()
    proc.stdout.close()
    log.flush()
    raise AssertionError(
        f"mailsvc run did not get ready:\n{''.join(out)}\n{Path(log.name).read_text()}"
    )


async def test_make_run_prints_the_panel_and_a_sample_clerk_login_that_works(
    settings: Settings, directory: Directory, parts: Parts, tmp_path: Path
) -> None:
    from mailsvc.cli.main import _sample_clerk

    log = tmp_path / "run.log"
    with log.open("w", encoding="utf-8") as sink:
        printed, proc = await asyncio.to_thread(_run_until_ready, settings, sink)
        try:
            found = re.search(
                r"Panel urzędników \(WWW\): (\S+)\n  login: (\S+)\n  hasło: (\S+)\n", printed
            )
            assert found is not None, printed
            url, login, password = found.groups()
            assert login == "sekretariat" and url.startswith("http://127.0.0.1:")
            # Beside the councillor's login.
            assert printed.index("Skrzynka radnego") < found.start()
            async with httpx.AsyncClient(base_url=url, timeout=60.0) as web:
                answer = await sign_in(web, login, password)
                assert answer.status_code == 303, answer.text
                assert "Sekretariat Rady" in (await web.get("/")).text
        finally:
            proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(proc.wait, 60)
            assert proc.stdout is not None
            proc.stdout.close()
    assert password not in log.read_text(encoding="utf-8")  # only the console saw it
    # The next run finds the clerk: the login again, the password no more.
    again = await _sample_clerk(settings)
    assert "login: sekretariat" in again and password not in again and "hasło:" not in again
    assert "clerks reset-password sekretariat" in again
    staff = await directory.list_staff()
    assert [e.login for e in staff] == ["sekretariat"]
