"""The clerks' web interface on the real stack: the whole service, slapd, Dovecot and httpx.

A clerk is a directory account in the clerks group (``web.clerks_group``); everything else — the
sign-in, CSRF tokens, uploads, the notice rule, sending, the matrix, the API — is the real thing.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pypdf
import pytest
from fpdf import FPDF
from sqlalchemy import update

from mailsvc import resources
from mailsvc.app import Parts, Service, start_service
from mailsvc.cli.councillors import run_import
from mailsvc.config import Settings
from mailsvc.directory.councillors import CreatedAccount
from mailsvc.domain.receipt_states import EventKind
from mailsvc.domain.vocabulary import STATE_ORDER, state_meaning
from mailsvc.storage.clerks import SCOPES, WebStore
from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import api_tokens, web_sessions
from provisioning.directory import Directory

# Run against Samba's AD DC too (make test-samba): what the directory server may change.
pytestmark = pytest.mark.directory

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SAMPLE_ROSTER = resources.config_dir() / "sample-roster.csv"


def local_now() -> datetime:
    return datetime.now(ZoneInfo("Europe/Warsaw")).replace(tzinfo=None)


def make_pdf(path: Path, text: str) -> Path:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.cell(text=text)
    pdf.output(str(path))
    return path


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, html[:2000]
    return found.group(1)


@pytest.fixture
async def clerk(
    add_councillor: Callable[[str, str], Any], directory: Directory, parts: Parts
) -> CreatedAccount:
    account: CreatedAccount = await add_councillor("Urszula", "Źdźbło-Urzędnik")
    await directory.sync_group(parts.settings.web.clerks_group, [account.dn], "Urzędnicy")
    return account


@pytest.fixture
async def web(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
    ) as client:
        yield client


async def sign_in(web: httpx.AsyncClient, login: str, password: str) -> httpx.Response:
    page = await web.get("/login")
    assert page.status_code == 200
    return await web.post(
        "/login",
        data={"username": login, "password": password, "csrf_token": csrf_of(page.text)},
    )


async def signed_in(web: httpx.AsyncClient, clerk: CreatedAccount) -> str:
    """Sign in; returns the session's CSRF token (read from the dashboard)."""
    answer = await sign_in(web, clerk.address, clerk.password)
    assert answer.status_code == 303, answer.text
    dashboard = await web.get("/")
    assert dashboard.status_code == 200
    return csrf_of(dashboard.text)


async def audit_actions(parts: Parts, actor_part: str) -> list[str]:
    entries, _ = await WebStore(parts.engine).audit_entries(limit=1000, actor=actor_part)
    return [e.action for e in entries]


async def test_clerk_signs_in_sees_the_dashboard_and_signs_out(
    web: httpx.AsyncClient, clerk: CreatedAccount, parts: Parts
) -> None:
    assert (await web.get("/")).headers["location"].startswith("/login?next=")
    answer = await sign_in(web, clerk.address, clerk.password)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    dashboard = await web.get("/")
    assert dashboard.status_code == 200
    assert "Urszula Źdźbło-Urzędnik" in dashboard.text
    assert "Najbliższe sesje" in dashboard.text
    assert "script-src 'nonce-" in dashboard.headers["content-security-policy"]
    english = await web.get("/?lang=en")
    assert "Upcoming sessions" in english.text

    out = await web.post("/logout", data={"csrf_token": csrf_of(dashboard.text)})
    assert out.status_code == 303
    assert (await web.get("/")).status_code == 303  # back to the login page
    assert {"web-login", "web-logout"} <= set(await audit_actions(parts, clerk.address))


async def test_directory_user_outside_the_clerks_group_is_refused(
    web: httpx.AsyncClient,
    clerk: CreatedAccount,
    add_councillor: Callable[[str, str], Any],
    parts: Parts,
) -> None:
    councillor: CreatedAccount = await add_councillor("Łukasz", "Żółć")
    answer = await sign_in(web, councillor.address, councillor.password)
    # The same answer as a wrong password: it must not tell that this password was right.
    assert answer.status_code == 401 and "Nieprawidłowy login lub hasło" in answer.text
    assert "grupie urzędników" not in answer.text
    assert "mailsvc_session" not in answer.headers.get("set-cookie", "")
    assert (await web.get("/")).status_code == 303
    wrong = await sign_in(web, clerk.address, "not-the-password")
    assert wrong.status_code == 401 and "Nieprawidłowy login lub hasło" in wrong.text
    assert "web-login-refused" in await audit_actions(parts, councillor.address)


async def test_form_posts_without_the_csrf_token_are_refused(
    web: httpx.AsyncClient, clerk: CreatedAccount, parts: Parts
) -> None:
    await web.get("/login")
    no_token = await web.post("/login", data={"username": clerk.address, "password": "x"})
    assert no_token.status_code == 403
    csrf = await signed_in(web, clerk)
    form = {"number": "I/2026", "kind": "ordinary", "starts_at": "2031-01-10T10:00"}
    refused = await web.post("/sessions", data=form)
    assert refused.status_code == 403 and "CSRF" in refused.text
    forged = await web.post("/sessions", data={**form, "csrf_token": csrf[:-2] + "xx"})
    assert forged.status_code == 403
    assert await parts.distributions().store.list_sessions() == []
    accepted = await web.post("/sessions", data={**form, "csrf_token": csrf})
    assert accepted.status_code == 303


async def test_failed_logins_are_rate_limited(
    web: httpx.AsyncClient, clerk: CreatedAccount, parts: Parts
) -> None:
    attempts = parts.settings.web.login_attempts
    for _ in range(attempts):
        assert (await sign_in(web, clerk.address, "wrong")).status_code == 401
    blocked = await sign_in(web, clerk.address, clerk.password)  # right, but too late
    assert blocked.status_code == 429
    assert "Zbyt wiele nieudanych prób" in blocked.text
    assert int(blocked.headers["retry-after"]) > 0


async def test_parallel_wrong_logins_get_at_most_the_allowed_checks(
    web: httpx.AsyncClient, clerk: CreatedAccount, parts: Parts
) -> None:
    """50 wrong passwords at once: the attempt is reserved in the database before the
    directory bind, so at most web.login_attempts passwords are checked (each check that fails
    is audited; the others are refused before any check)."""
    page = await web.get("/login")
    form = {"username": clerk.address, "password": "wrong", "csrf_token": csrf_of(page.text)}
    answers = await asyncio.gather(*(web.post("/login", data=form) for _ in range(50)))
    codes = [a.status_code for a in answers]
    attempts = parts.settings.web.login_attempts
    assert codes.count(401) <= attempts and codes.count(401) + codes.count(429) == 50
    checked = [a for a in await audit_actions(parts, clerk.address) if a == "web-login-refused"]
    assert len(checked) == codes.count(401)


async def test_roster_import_shows_the_plan_then_applies_it(
    web: httpx.AsyncClient, clerk: CreatedAccount, directory: Directory, parts: Parts
) -> None:
    csrf = await signed_in(web, clerk)
    roster = SAMPLE_ROSTER.read_bytes()
    preview = await web.post(
        "/councillors/import",
        data={"csrf_token": csrf},
        files={"roster": ("rada.csv", roster, "text/csv")},
    )
    assert preview.status_code == 200, preview.text
    creates = int(re.search(r'id="plan-create">(\d+)<', preview.text).group(1))  # type: ignore[union-attr]
    assert creates >= 10
    assert "lukasz.zolc@" in preview.text  # planned addresses are shown
    before = {e.address for e in await directory.list_councillors()}
    assert not any(a.startswith("lukasz.zolc@") for a in before)  # the preview changed nothing

    fields = dict(
        re.findall(r'name="(upload_id|plan_digest|encoding)" value="([^"]*)"', preview.text)
    )
    if 'id="skip_invalid"' in preview.text:
        fields["skip_invalid"] = "1"
    applied = await web.post("/councillors/import/apply", data={"csrf_token": csrf, **fields})
    assert applied.status_code == 200, applied.text
    assert f"Utworzono: {creates}" in applied.text
    after = {e.address for e in await directory.list_councillors()}
    assert len(after - before) == creates
    assert any(a.startswith("lukasz.zolc@") for a in after)
    letters = re.search(r'href="(/councillors/letters/[^"]+)"', applied.text)
    assert letters is not None
    printed = await web.get(letters.group(1))
    assert printed.status_code == 200 and "Łukasz" in printed.text
    listing = await web.get("/councillors")
    assert "Żółć" in listing.text and "Nowak-Kowalska" in listing.text
    # Applying the same preview twice is refused: the upload is used up.
    again = await web.post("/councillors/import/apply", data={"csrf_token": csrf, **fields})
    assert again.status_code == 410
    actions = await audit_actions(parts, clerk.address)
    assert "roster-import" in actions and "create" in actions


async def test_import_applies_only_the_plan_the_clerk_approved(
    web: httpx.AsyncClient,
    clerk: CreatedAccount,
    directory: Directory,
    parts: Parts,
    tmp_path: Path,
) -> None:
    """The directory changes between the preview and the confirmation (someone imports one row
    of the same roster from the command line): the approved plan is no longer what would be
    done, so nothing is applied and the clerk is told why."""
    csrf = await signed_in(web, clerk)
    roster = SAMPLE_ROSTER.read_bytes()
    preview = await web.post(
        "/councillors/import",
        data={"csrf_token": csrf},
        files={"roster": ("rada.csv", roster, "text/csv")},
    )
    assert preview.status_code == 200, preview.text
    fields = dict(
        re.findall(r'name="(upload_id|plan_digest|encoding)" value="([^"]*)"', preview.text)
    )
    if 'id="skip_invalid"' in preview.text:
        fields["skip_invalid"] = "1"

    header, first_row = roster.decode("utf-8-sig").splitlines()[:2]
    one_row = tmp_path / "one-row.csv"
    one_row.write_text(f"{header}\n{first_row}\n", encoding="utf-8")
    await run_import(parts, one_row, quiet=True)
    before = {e.address for e in await directory.list_councillors()}

    refused = await web.post("/councillors/import/apply", data={"csrf_token": csrf, **fields})
    assert refused.status_code == 409
    assert "zmienił się od podglądu" in refused.text and "Nic nie zmieniono" in refused.text
    assert {e.address for e in await directory.list_councillors()} == before


async def test_session_documents_notice_and_receipts_matrix(
    web: httpx.AsyncClient,
    clerk: CreatedAccount,
    add_councillor: Callable[[str, str], Any],
    parts: Parts,
    tmp_path: Path,
) -> None:
    await add_councillor("Łukasz", "Żółć")
    await add_councillor("Anna", "Nowak")
    csrf = await signed_in(web, clerk)
    starts = (local_now() + timedelta(days=20)).strftime("%Y-%m-%dT10:00")
    created = await web.post(
        "/sessions",
        data={
            "csrf_token": csrf,
            "number": "XV/2026",
            "kind": "ordinary",
            "starts_at": starts,
            "place": "Sala Obrad",
            "agenda": "Otwarcie sesji\nProjekt uchwały w sprawie żłobków\n",
        },
    )
    assert created.status_code == 303
    session_url = created.headers["location"].split("?")[0]
    page = await web.get(session_url)
    assert "Projekt uchwały w sprawie żłobków" in page.text

    pdf = make_pdf(tmp_path / "projekt.pdf", "Projekt uchwaly").read_bytes()
    fake = b"MZ\x90\x00" + b"\x00" * 200  # a program, named as a PDF
    upload = await web.post(
        f"{session_url}/documents",
        data={"csrf_token": csrf, "doc_kind": "draft-resolution", "agenda_item": "2"},
        files=[
            ("files", ("Projekt uchwały.pdf", pdf, "application/pdf")),
            ("files", ("budżet.pdf", fake, "application/pdf")),
        ],
    )
    assert upload.status_code == 422
    assert "Projekt uchwały.pdf" in upload.text  # accepted
    refused = re.search(r'id="upload-refused".*?</div>', upload.text, re.S)
    assert refused is not None and "„budżet.pdf” nie jest" in refused.group(0)
    docs = await parts.distributions().store.documents(int(session_url.rsplit("/", 1)[1]))
    assert [d.filename for d in docs] == ["Projekt uchwały.pdf"]

    check = await web.post(
        f"{session_url}/distributions/check", data={"csrf_token": csrf, "kind": "notice"}
    )
    assert check.status_code == 200
    assert 'data-notice-ok="1"' in check.text and 'id="schedule-confirm"' in check.text
    confirmed = await web.post(
        f"{session_url}/distributions", data={"csrf_token": csrf, "kind": "notice"}
    )
    assert confirmed.status_code == 303 and "done=scheduled-" in confirmed.headers["location"]

    matrix = await web.get(f"{session_url}/receipts")
    assert matrix.status_code == 200
    for name in ("Łukasz Żółć", "Anna Nowak"):
        assert name in matrix.text
    assert 'data-live-url="' in matrix.text and 'id="refresh"' in matrix.text
    live = (await web.get(f"{session_url}/receipts.json")).json()
    assert len(live["rows"]) >= 2
    assert all(set(r["cells"]) == {docs[0].sha256} for r in live["rows"])
    exported = await web.get(f"{session_url}/receipts.csv")
    assert exported.status_code == 200 and "Żółć" in exported.content.decode("utf-8-sig")
    assert (await web.get(f"{session_url}/receipts.pdf")).content.startswith(b"%PDF-")
    page = await web.get(session_url)
    assert 'id="evidence-link"' in page.text and "/evidence.pdf" in page.text
    pack = await web.get(f"{session_url}/evidence.pdf")
    assert pack.status_code == 200 and pack.content.startswith(b"%PDF-")
    assert "pakiet-dowodowy-" in pack.headers["content-disposition"]
    assert b"/ByteRange" in pack.content and b"evidence.json" in pack.content  # signed, data

    actions = await audit_actions(parts, clerk.address)
    for action in (
        "session-create",
        "document-attach",
        "document-refused",
        "distribution-schedule",
    ):
        assert action in actions
    audit_page = await web.get("/audit")
    assert "distribution-schedule" in audit_page.text and "Źdźbło-Urzędnik" in audit_page.text


async def test_notice_too_late_needs_a_recorded_reason(
    web: httpx.AsyncClient, clerk: CreatedAccount, parts: Parts
) -> None:
    csrf = await signed_in(web, clerk)
    starts = (local_now() + timedelta(days=2)).strftime("%Y-%m-%dT10:00")
    created = await web.post(
        "/sessions",
        data={"csrf_token": csrf, "number": "XVI/2026", "kind": "ordinary", "starts_at": starts},
    )
    session_url = created.headers["location"].split("?")[0]
    check = await web.post(
        f"{session_url}/distributions/check", data={"csrf_token": csrf, "kind": "notice"}
    )
    assert 'data-notice-ok="0"' in check.text and "wymaga doręczenia" in check.text
    assert 'name="override_reason"' in check.text
    refused = await web.post(
        f"{session_url}/distributions", data={"csrf_token": csrf, "kind": "notice"}
    )
    assert refused.status_code == 409
    sent = await web.post(
        f"{session_url}/distributions",
        data={"csrf_token": csrf, "kind": "notice", "override_reason": "pilna sprawa"},
    )
    assert sent.status_code == 303
    dists = await parts.distributions().store.distributions()
    assert [d.override_reason for d in dists] == ["pilna sprawa"]
    cancel = await web.post(
        f"{session_url}/distributions/check", data={"csrf_token": csrf, "kind": "cancellation"}
    )
    assert cancel.status_code == 200 and 'id="schedule-confirm"' in cancel.text


async def test_api_token_authenticates_and_a_bad_one_gets_401(
    web: httpx.AsyncClient, parts: Parts, service: Service
) -> None:
    store = WebStore(parts.engine)
    token = await store.create_token("bip", "pytest", scopes=SCOPES)
    assert (await web.get("/api/v1/sessions")).status_code == 401
    bad = await web.get("/api/v1/sessions", headers={"authorization": "Bearer msv_nope"})
    assert bad.status_code == 401 and "error" in bad.json()
    auth = {"authorization": f"Bearer {token}"}
    created = await web.post(
        "/api/v1/sessions",
        headers=auth,
        json={"number": "II/2026", "kind": "budget", "starts_at": "2031-03-01T10:00"},
    )
    assert created.status_code == 201, created.text
    listed = await web.get("/api/v1/sessions", headers=auth)
    assert [s["number"] for s in listed.json()] == ["II/2026"]
    assert "session-create" in await audit_actions(parts, "api:bip")
    session_id = listed.json()[0]["id"]
    check = await web.post(
        f"/api/v1/sessions/{session_id}/notice-check", headers=auth, json={"kind": "notice"}
    )
    assert check.status_code == 200 and check.json()["ok"] is True
    refused = await web.post(
        f"/api/v1/sessions/{session_id}/documents",
        headers=auth,
        files=[("files", ("uchwała.pdf", b"plain text, not a PDF\n", "application/pdf"))],
    )
    assert refused.status_code == 422 and "uchwała.pdf" in refused.json()["refused"][0]["error"]
    plan = await web.post(
        "/api/v1/councillors/import?dry_run=true",
        headers=auth,
        files={"roster": ("rada.csv", SAMPLE_ROSTER.read_bytes(), "text/csv")},
    )
    assert plan.status_code == 200, plan.text
    assert plan.json()["dry_run"] is True and len(plan.json()["create"]) >= 10
    assert await store.revoke_token("bip")
    assert (await web.get("/api/v1/sessions", headers=auth)).status_code == 401
    # Scopes: a read-only token reads and may not write or touch councillors.
    reader = {"authorization": f"Bearer {await store.create_token('tablica', 'pytest')}"}
    assert (await web.get("/api/v1/sessions", headers=reader)).status_code == 200
    denied = await web.post(
        "/api/v1/sessions",
        headers=reader,
        json={"number": "III/2026", "kind": "ordinary", "starts_at": "2031-04-01T10:00"},
    )
    assert denied.status_code == 403 and "distributions" in denied.json()["error"]
    people = await web.post("/api/v1/councillors/x@rada.example/reset-password", headers=reader)
    assert people.status_code == 403 and "councillors" in people.json()["error"]
    # Expiry: a token past its date no longer works.
    short = await store.create_token("krotki", "pytest", valid_days=1)
    async with parts.engine.begin() as conn:
        await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.name == "krotki")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = await web.get("/api/v1/sessions", headers={"authorization": f"Bearer {short}"})
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    with pytest.raises(ValueError, match="scopes"):
        await store.create_token("zly", "pytest", scopes=("admin",))
    spec = (await web.get("/api/openapi.json")).json()
    assert (
        spec["openapi"].startswith("3.") and "/api/v1/sessions/{id}/distributions" in spec["paths"]
    )


async def test_password_reset_letter_end_mandate_and_the_other_pages(
    web: httpx.AsyncClient,
    clerk: CreatedAccount,
    add_councillor: Callable[[str, str], Any],
    directory: Directory,
    parts: Parts,
) -> None:
    councillor: CreatedAccount = await add_councillor("Łukasz", "Żółć")
    csrf = await signed_in(web, clerk)
    reset = await web.post(
        f"/councillors/{councillor.address}/reset-password", data={"csrf_token": csrf}
    )
    assert reset.status_code == 200
    password = re.search(r'id="new-password">([^<]+)<', reset.text)
    assert password is not None and password.group(1) != councillor.password
    assert await directory.authenticate(councillor.address, password.group(1)) is not None
    letter = re.search(r'href="(/councillors/letters/[^"]+)"', reset.text)
    assert letter is not None
    printed = await web.get(letter.group(1))
    assert password.group(1) in printed.text and "Łukasz Żółć" in printed.text
    assert (await web.get("/councillors/letters/not-a-key")).status_code == 410

    ended = await web.post(
        f"/councillors/{councillor.address}/end-mandate",
        data={"csrf_token": csrf, "on": "2020-01-01", "reason": "zrzeczenie się mandatu"},
    )
    assert ended.status_code == 303
    entry = await directory.find_by_address(councillor.address)
    assert entry is not None and not entry.active
    bad_date = await web.post(
        f"/councillors/{clerk.address}/end-mandate", data={"csrf_token": csrf, "on": "jutro"}
    )
    assert bad_date.status_code == 400 and "RRRR-MM-DD" in bad_date.text
    unknown = await web.post(
        "/councillors/nikt@example.org/reset-password", data={"csrf_token": csrf}
    )
    assert unknown.status_code == 404
    # A clerk's password is reset by an operator from the command line, not from the panel.
    protected = await web.post(
        f"/councillors/{clerk.address}/reset-password", data={"csrf_token": csrf}
    )
    assert protected.status_code == 403 and "grupy urzędników" in protected.text
    still = await directory.authenticate(clerk.address, clerk.password)
    assert still is not None  # the password did not change

    for url, marker in (
        ("/relay", 'id="relay-stats"'),
        ("/queue", 'id="queue"'),
        ("/queue?show=all", 'id="queue"'),
        ("/audit?actor=Urz", "reset-password"),
        ("/sessions", 'id="session-form"'),
        ("/councillors?all=1", "wyłączony"),
    ):
        page = await web.get(url)
        assert page.status_code == 200 and marker in page.text, url
    retried = await web.post("/queue/retry", data={"csrf_token": csrf, "all_dead": "1"})
    assert retried.status_code == 303
    actions = await audit_actions(parts, clerk.address)
    assert {"reset-password", "end-mandate", "queue-retry"} <= set(actions)


async def test_api_token_made_by_the_cli_opens_the_api_and_revoking_closes_it(
    settings: Settings, directory: Directory
) -> None:
    from .test_cli import run_cli

    made = await asyncio.to_thread(
        run_cli,
        settings,
        "web",
        "token",
        "create",
        "--name",
        "skrypt",
        "--scope",
        "read",
        "--scope",
        "distributions",
        "--days",
        "30",
    )
    assert made.returncode == 0, made.stderr
    token = next(line for line in made.stdout.splitlines() if line.startswith("msv_"))
    listed = await asyncio.to_thread(run_cli, settings, "web", "token", "list")
    assert "skrypt" in listed.stdout and token not in listed.stdout  # only a hash is kept
    assert "scopes read,distributions" in listed.stdout and "expires " in listed.stdout
    service = await start_service(settings)
    try:
        base = f"http://127.0.0.1:{service.web_port}"
        async with httpx.AsyncClient(base_url=base) as client:
            ok = await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200, ok.text
            revoked = await asyncio.to_thread(
                run_cli, settings, "web", "token", "revoke", "--name", "skrypt"
            )
            assert revoked.returncode == 0, revoked.stderr
        # A new connection: the CLI can take longer than the server's keep-alive (5 s) on a
        # busy machine, and a request on the idle one may cross the server's closing it.
        async with httpx.AsyncClient(base_url=base) as client:
            refused = await client.get(
                "/api/v1/sessions", headers={"Authorization": f"Bearer {token}"}
            )
            assert refused.status_code == 401
    finally:
        await service.stop()


async def test_clerk_page_and_pdf_report_name_every_state_alike_in_the_configured_zone(
    settings: Settings,
    clerk: CreatedAccount,
    add_councillor: Callable[[str, str], Any],
    parts: Parts,
    tmp_path: Path,
) -> None:
    """One word per receipt state on the screen and in the annexed PDF (a failed delivery reads
    "niedoręczone" in both), and the report's local times in the configured zone."""
    from .test_distribution_flow import _send_raw, build_dsn, wait_until

    await add_councillor("Łukasz", "Żółć")
    anna: CreatedAccount = await add_councillor("Anna", "Nowak")
    new_york = settings.with_changes(distribution={"timezone": "America/New_York"})
    service = await start_service(new_york)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
        ) as web:
            csrf = await signed_in(web, clerk)
            starts = (local_now() + timedelta(days=20)).strftime("%Y-%m-%dT10:00")
            created = await web.post(
                "/sessions",
                data={
                    "csrf_token": csrf,
                    "number": "XX/2026",
                    "kind": "ordinary",
                    "starts_at": starts,
                },
            )
            assert created.status_code == 303
            session_url = created.headers["location"].split("?")[0]
            pdf = make_pdf(tmp_path / "porzadek.pdf", "Porzadek obrad").read_bytes()
            upload = await web.post(
                f"{session_url}/documents",
                data={"csrf_token": csrf, "doc_kind": "agenda"},
                files=[("files", ("Porządek obrad.pdf", pdf, "application/pdf"))],
            )
            assert upload.status_code in (200, 303), upload.text
            scheduled = await web.post(
                f"{session_url}/distributions", data={"csrf_token": csrf, "kind": "notice"}
            )
            assert scheduled.status_code == 303, scheduled.text
            dist_id = int(scheduled.headers["location"].rsplit("scheduled-", 1)[1])

            # Delivered to every mailbox, then a DSN for Anna's message: failed.
            store = parts.distributions().store
            delivered = await wait_until(lambda: _all_delivered(store, dist_id), within=30)
            assert delivered, "the notice was not delivered"
            recipient = next(
                r for r in await store.recipients(dist_id) if r.address == anna.address
            )
            verp = service.parts.distributions().return_path(recipient.id)
            dsn = build_dsn(verp, anna.address, recipient.message_id)
            await asyncio.to_thread(_send_raw, service.smtp_port, verp, dsn)
            failed = await wait_until(lambda: store.recipients_with_kind(dist_id, EventKind.FAILED))
            assert failed == {recipient.id}, "the DSN did not mark Anna's delivery failed"
            (queued, *_) = (await store.events([recipient.id]))[recipient.id]

            page = await web.get(f"{session_url}/receipts")
            assert page.status_code == 200
            report = await web.get(f"{session_url}/receipts.pdf")
            assert report.status_code == 200
    finally:
        await service.stop()

    # The clerk page: Anna's cell, and the legend's word for every state.
    row = re.search(rf'<tr data-address="{re.escape(anna.address)}">(.*?)</tr>', page.text, re.S)
    assert row is not None
    cell = re.search(r'class="state state-failed">([^<]+)<', row.group(1))
    assert cell is not None and cell.group(1) == "niedoręczone"
    legend = page.text[page.text.index("<h2>Legend") :]
    on_page = dict(re.findall(r'class="state state-([\w-]+)">([^<]+)<', legend))
    assert set(on_page) == {state.value for state in STATE_ORDER}

    # The PDF: the same word beside each state's meaning in its legend, and in Anna's row
    # (right after the distribution, then the time it was queued, in New York time).
    lines = [
        line
        for p in pypdf.PdfReader(io.BytesIO(report.content)).pages
        for line in p.extract_text().splitlines()
    ]
    for state in STATE_ORDER:
        assert f"{on_page[state.value]} {state_meaning(state, 'pl')}" in lines, state
    assert "Wszystkie godziny: czas lokalny America/New_York." in " ".join(lines)
    table = " ".join(" ".join(lines[lines.index("Radni i wysyłki") :]).split())
    anna_row = table[table.index("Anna Nowak") :]
    anna_row = anna_row[anna_row.index(f"#{dist_id} zawiadomienie ") :]
    assert queued.kind is EventKind.QUEUED
    in_new_york = queued.at.replace(tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    expected = f"#{dist_id} zawiadomienie {cell.group(1)} {in_new_york:%d.%m.%Y %H:%M} "
    assert anna_row.startswith(expected), anna_row[:200]


async def _all_delivered(store: Any, dist_id: int) -> bool:
    recipients = await store.recipients(dist_id)
    delivered = await store.recipients_with_kind(dist_id, EventKind.DELIVERED)
    return bool(recipients) and {r.id for r in recipients} <= set(delivered)


async def test_a_clerk_removed_from_the_group_loses_the_session(
    settings: Settings, clerk: CreatedAccount, directory: Directory, parts: Parts
) -> None:
    service = await start_service(settings.with_changes(web={"recheck_minutes": 0}))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
        ) as web:
            await signed_in(web, clerk)
            assert (await web.get("/")).status_code == 200  # checked: still a clerk
            await directory.sync_group(parts.settings.web.clerks_group, [], "Urzędnicy")
            gone = await web.get("/")
            assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
            assert "web-session-ended" in await audit_actions(parts, clerk.address)
    finally:
        await service.stop()


async def test_sessions_end_after_their_absolute_lifetime(parts: Parts) -> None:
    store = WebStore(parts.engine)
    token, session = await store.open_session("anna@rada.example", "Anna")
    idle, lifetime = timedelta(hours=1), timedelta(hours=12)
    assert await store.session(token, idle, lifetime) is not None
    async with parts.engine.begin() as conn:  # signed in 13 hours ago, active all along
        await conn.execute(
            update(web_sessions)
            .where(web_sessions.c.id == session.id)
            .values(created_at=utcnow() - timedelta(hours=13), last_seen=utcnow())
        )
    assert await store.session(token, idle, lifetime) is None
    assert await store.session(token, idle) is None  # and it is gone, not just refused


async def test_over_https_the_cookie_is_host_only_and_hsts_is_sent(
    settings: Settings, clerk: CreatedAccount
) -> None:
    service = await start_service(settings.with_changes(web={"public_url": "https://rada.example"}))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
        ) as web:
            # The browser would send the Secure login cookie back over https; httpx over
            # plain http does not, so the test hands it over itself.
            page = await web.get("/login")
            login_cookie = page.headers["set-cookie"].split(";", 1)[0]
            answer = await web.post(
                "/login",
                data={
                    "username": clerk.address,
                    "password": clerk.password,
                    "csrf_token": csrf_of(page.text),
                },
                headers={"cookie": login_cookie},
            )
            assert answer.status_code == 303, answer.text
            cookie = answer.headers["set-cookie"]
            assert cookie.startswith("__Host-mailsvc_session=")
            assert "secure" in cookie.lower() and "path=/" in cookie.lower()
            assert "domain=" not in cookie.lower()
            assert answer.headers["strict-transport-security"].startswith("max-age=")
    finally:
        await service.stop()
