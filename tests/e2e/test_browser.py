"""The service through a real headless Chromium: what councillors and clerks see and click.

Everything behind the browser is real: slapd and Dovecot from the local stack, the service's
SMTP servers, delivery workers, scheduler and web server, and mail read back over IMAP. Each test
saves screenshots of the pages it visits to docs/screenshots/ (shown in the README).
"""

from __future__ import annotations

import asyncio
import base64
import email
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fpdf import FPDF

from mailsvc import resources
from mailsvc.app import Service
from mailsvc.config import Settings
from mailsvc.directory.councillors import CreatedAccount
from mailsvc.domain.receipt_states import EventKind
from mailsvc.mailbox import read_inbox
from provisioning.directory import Directory
from tests.e2e.conftest import PHONE, NewContext, Screenshot

try:
    from playwright.async_api import Page, expect
except ImportError as missing:  # the fixture `browser` says the same for tests without pages
    raise ImportError(
        "Playwright for Python is not installed: run `make test`, or "
        "`.venv/bin/pip install -e '.[dev]'`"
    ) from missing

SESSION_NUMBER = "XV/2026"
DOCUMENT_NAME = "Projekt uchwały – żłobki.pdf"
ACK_BUTTON = "Potwierdzam otrzymanie"
SAMPLE_ROSTER = resources.config_dir() / "sample-roster.csv"
# Mail and receipts arrive through real servers; bound every wait so a failure is quick.
WITHIN = 20.0
# The receipts page polls its JSON every web.refresh_seconds (5 s by default): allow two rounds
# and the delivery itself.
LIVE_MS = 30_000


# --- helpers ------------------------------------------------------------------------------------


def make_pdf(path: Path, pages: int) -> Path:
    """A small real PDF made with fpdf2 (the service checks documents by content)."""
    pdf = FPDF()
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", size=14)
        pdf.cell(text=f"Projekt uchwaly w sprawie zlobkow - strona {number}")
    pdf.output(str(path))
    return path


async def poll(check: Callable[[], Awaitable[Any]], what: str, within: float = WITHIN) -> Any:
    """``await check()`` until it returns something truthy; fail naming ``what`` if it never is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def emailed_ack_link(settings: Settings, address: str, password: str) -> str:
    """The acknowledgement link from the distribution message in ``address``'s mailbox (IMAP)."""

    async def find() -> str | None:
        inbox = await read_inbox(settings.stack.host, settings.stack.imap_port, address, password)
        for raw in inbox:
            message = email.message_from_bytes(raw, policy=policy.default)
            if SESSION_NUMBER not in str(message["Subject"]):
                continue
            text = message.get_body(("plain",))
            assert text is not None, "the distribution message has no text part"
            link = re.search(r"https?://\S+/a/[\w.~-]+", text.get_content())
            assert link, "no acknowledgement link in the distribution message"
            return link.group(0)
        return None

    link: str = await poll(find, f"the distribution message in {address}'s mailbox")
    return link


async def receipt_states(service: Service) -> dict[str, EventKind]:
    """Councillor address -> state of their receipt of the session's only distribution."""
    matrix = await service.parts.distributions().matrix(SESSION_NUMBER)
    return {row.address: row.cells[0].state.state for row in matrix.rows if row.cells}


async def distribute_notice(service: Service, tmp_path: Path) -> None:
    """Create session XV/2026 two weeks ahead, attach a 3-page PDF, send the notice now."""
    distributions = service.parts.distributions()
    starts = datetime.now(ZoneInfo("Europe/Warsaw")).replace(tzinfo=None) + timedelta(days=14)
    await distributions.create_session(
        number=SESSION_NUMBER,
        kind="ordinary",
        starts_at=starts.replace(hour=10, minute=0, second=0, microsecond=0),
        place="Sala Obrad, ul. Rynek 1",
        agenda=["Otwarcie sesji", "Projekt uchwały w sprawie żłobków"],
        actor="pytest",
    )
    await distributions.attach(
        SESSION_NUMBER,
        make_pdf(tmp_path / DOCUMENT_NAME, pages=3),
        doc_kind="draft-resolution",
        agenda_item=2,
        actor="pytest",
    )
    await distributions.schedule(SESSION_NUMBER, actor="pytest")  # now


# --- councillors --------------------------------------------------------------------------------


async def test_councillor_acknowledges_receipt_through_the_emailed_link_on_a_phone(
    settings: Settings,
    service: Service,
    add_councillor: Callable[[str, str], Awaitable[CreatedAccount]],
    new_context: NewContext,
    screenshot: Screenshot,
    tmp_path: Path,
) -> None:
    zolc = await add_councillor("Łukasz", "Żółć")
    nowak = await add_councillor("Anna", "Nowak")
    await distribute_notice(service, tmp_path)
    link = await emailed_ack_link(settings, zolc.address, zolc.password)
    assert f":{service.web_port}/a/" in link

    async def both_delivered() -> bool:
        states = await receipt_states(service)
        return len(states) == 2 and all(s is EventKind.DELIVERED for s in states.values())

    await poll(both_delivered, "both receipts to be DELIVERED")

    # On a desktop: what is being acknowledged, and one button.
    desktop = await (await new_context()).new_page()
    response = await desktop.goto(link)
    assert response is not None and response.status == 200
    await expect(desktop).to_have_title(re.compile(SESSION_NUMBER))
    await expect(desktop.get_by_role("heading", level=1)).to_have_text("Potwierdzenie otrzymania")
    await expect(desktop.get_by_text("Łukasz Żółć")).to_be_visible()
    await expect(desktop.get_by_text(f"{SESSION_NUMBER} (sesja zwyczajna)")).to_be_visible()
    await expect(desktop.get_by_text(DOCUMENT_NAME)).to_be_visible()
    await expect(desktop.get_by_text("3\N{NO-BREAK SPACE}strony")).to_be_visible()
    await expect(desktop.get_by_role("button")).to_have_count(1)
    await expect(desktop.get_by_role("button", name=ACK_BUTTON)).to_be_visible()
    await screenshot(desktop, "ack-page")

    # On a phone: the same page fits the screen and the button is within thumb's reach.
    phone_context = await new_context(
        viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    phone = await phone_context.new_page()
    await phone.goto(link)
    button = phone.get_by_role("button", name=ACK_BUTTON)
    await expect(button).to_be_visible()
    await expect(phone.get_by_text(f"{SESSION_NUMBER} (sesja zwyczajna)")).to_be_visible()
    page_width = await phone.evaluate("document.documentElement.scrollWidth")
    assert page_width <= PHONE["width"], f"the page scrolls sideways on a phone ({page_width} px)"
    box = await button.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert box["height"] >= 44, "the button is smaller than a comfortable touch target"
    await screenshot(phone, "ack-page-phone")

    # Opening the page (twice, in two browsers) recorded nothing.
    assert await receipt_states(service) == {
        zolc.address: EventKind.DELIVERED,
        nowak.address: EventKind.DELIVERED,
    }

    await button.tap()
    await expect(phone.get_by_role("heading", level=1)).to_have_text(
        "Dziękujemy – potwierdzenie zapisane"
    )
    await expect(phone.get_by_role("status")).to_contain_text("Otrzymanie potwierdzono")
    await expect(phone.get_by_role("button")).to_have_count(0)
    await screenshot(phone, "ack-confirmed")

    # Only this councillor's receipt changed.
    assert await receipt_states(service) == {
        zolc.address: EventKind.ACKNOWLEDGED,
        nowak.address: EventKind.DELIVERED,
    }

    # The desktop tab, reloaded, now says it is done and offers no button.
    await desktop.reload()
    await expect(desktop.get_by_role("heading", level=1)).to_have_text(
        "Otrzymanie już potwierdzono"
    )
    await expect(desktop.get_by_role("button")).to_have_count(0)


# --- clerks -------------------------------------------------------------------------------------


@pytest.fixture
async def clerk(
    add_councillor: Callable[[str, str], Awaitable[CreatedAccount]],
    directory: Directory,
    settings: Settings,
) -> CreatedAccount:
    """A directory account in the clerks group (``web.clerks_group``), as the web README says."""
    account = await add_councillor("Urszula", "Źdźbło-Urzędnik")
    await directory.sync_group(settings.web.clerks_group, [account.dn], "Urzędnicy")
    return account


async def sign_in(page: Page, base_url: str, login: str, password: str) -> int:
    """Open the panel, get sent to the login page, fill it in and submit; the POST's status."""
    await page.goto(f"{base_url}/")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.locator("#username").fill(login)
    await page.locator("#password").fill(password)
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith("/login")
    ) as answer:
        await page.locator("#login-submit").click()
    return (await answer.value).status


async def drop_file(page: Page, zone: str, name: str, content: bytes, media_type: str) -> None:
    """Drag-and-drop a file onto ``zone`` the way a file manager does (a DataTransfer)."""
    transfer = await page.evaluate_handle(
        """([name, type, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type }));
            return transfer;
        }""",
        [name, media_type, base64.b64encode(content).decode("ascii")],
    )
    for event in ("dragenter", "dragover", "drop"):
        await page.dispatch_event(zone, event, {"dataTransfer": transfer})


async def test_clerk_imports_the_roster_sends_a_notice_and_watches_the_receipts(
    settings: Settings,
    service: Service,
    clerk: CreatedAccount,
    new_context: NewContext,
    screenshot: Screenshot,
    tmp_path: Path,
) -> None:
    base_url = f"http://127.0.0.1:{service.web_port}"
    page = await (await new_context()).new_page()

    # Sign in.
    await page.goto(f"{base_url}/login")
    await expect(page.locator("#login-form")).to_be_visible()
    await screenshot(page, "login")
    assert await sign_in(page, base_url, clerk.address, clerk.password) == 303
    await expect(page).to_have_url(f"{base_url}/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Pulpit")
    await expect(page.locator("header")).to_contain_text("Urszula Źdźbło-Urzędnik")

    # Import the sample roster: the plan first, nothing changed yet, then apply it.
    await page.get_by_role("link", name="Radni", exact=True).click()
    await page.locator("#import-link").click()
    await page.locator("#roster").set_input_files(SAMPLE_ROSTER)
    await page.locator("#import-preview").click()
    await expect(page.locator("#plan-creates")).to_contain_text("Łukasz Żółć")
    creates = int(await page.locator("#plan-create").inner_text())
    roster_rows = len(SAMPLE_ROSTER.read_text(encoding="utf-8-sig").splitlines()) - 1
    assert creates == roster_rows, f"the plan creates {creates} of {roster_rows} councillors"
    await expect(page.locator("#plan-creates tbody tr")).to_have_count(creates)
    await screenshot(page, "import-preview")
    assert len(await service.directory.list_councillors()) == 1  # only the clerk so far
    await page.locator("#import-apply").click()
    await expect(page.locator("#import-result")).to_contain_text(f"Utworzono: {creates}")
    accounts = page.locator("#created-accounts tbody tr")
    await expect(accounts).to_have_count(creates)
    zolc_row = accounts.filter(has_text="Łukasz Żółć")
    zolc_address = (await zolc_row.locator("td").nth(1).inner_text()).strip()
    zolc_password = (await zolc_row.locator("code").inner_text()).strip()
    await screenshot(page, "import-result", mask=[accounts.locator("code")])

    created = set(await accounts.locator("td:nth-child(2)").all_inner_texts())
    assert len(created) == creates and zolc_address in created

    await page.get_by_role("link", name="Radni", exact=True).click()
    await expect(page.locator(f'#councillors tr[data-address="{zolc_address}"]')).to_contain_text(
        "aktywny"
    )
    listed = await page.locator("#councillors tbody tr[data-address]").evaluate_all(
        "rows => rows.map((row) => row.dataset.address)"
    )
    assert created <= set(listed), f"not listed: {sorted(created - set(listed))}"
    await screenshot(page, "councillors")
    # Who the notice must reach: the directory's active councillors (the roster's, at least).
    recipients = {e.address for e in await service.directory.list_councillors() if e.active}
    assert created <= recipients

    # Create session XV/2026 two weeks ahead.
    await page.get_by_role("link", name="Sesje", exact=True).click()
    starts = datetime.now(ZoneInfo("Europe/Warsaw")) + timedelta(days=14)
    await page.locator("#number").fill(SESSION_NUMBER)
    await page.locator("#kind").select_option("ordinary")
    await page.locator("#starts_at").fill(starts.strftime("%Y-%m-%dT10:00"))
    await page.locator("#place").fill("Sala Obrad, ul. Rynek 1")
    await page.locator("#agenda").fill("Otwarcie sesji\nProjekt uchwały w sprawie żłobków")
    await page.locator("#session-create").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Sesja {SESSION_NUMBER}")
    await expect(page.locator("#agenda-items li")).to_have_count(2)

    # Upload a PDF by dropping it on the drop zone, for agenda item 2.
    pdf = make_pdf(tmp_path / DOCUMENT_NAME, pages=3).read_bytes()
    await drop_file(page, "[data-dropzone]", DOCUMENT_NAME, pdf, "application/pdf")
    await expect(page.locator("[data-dropzone-list]")).to_have_text(DOCUMENT_NAME)
    await page.locator("#doc_kind").select_option("draft-resolution")
    await page.locator("#agenda_item").select_option("2")
    await page.locator("#upload-submit").click()
    await expect(page.locator("#upload-ok")).to_contain_text(DOCUMENT_NAME)
    await expect(page.locator("#documents tbody tr")).to_have_count(1)
    await expect(page.locator("#documents tbody tr")).to_contain_text(DOCUMENT_NAME)
    await screenshot(page, "session")

    # Schedule the notice now: the notice rule is checked and shown before confirming.
    await expect(page.locator("#kind-notice")).to_be_checked()
    await page.locator("#distribute-check").click()
    await expect(page.locator("#notice-check")).to_have_attribute("data-notice-ok", "1")
    await expect(page.locator("#pack")).to_contain_text(DOCUMENT_NAME)
    await screenshot(page, "notice-check")
    await page.locator("#schedule-confirm").click()
    await expect(page.locator("#scheduled-ok")).to_be_visible()

    # The receipts matrix: every councillor of the roster, each delivered (the page updates
    # itself; no reload by the test).
    await page.locator("#receipts-link").click()
    matrix_rows = page.locator("#matrix tbody tr[data-address]")
    await expect(matrix_rows).to_have_count(len(recipients), timeout=LIVE_MS)
    delivered = page.locator("#matrix .state-delivered")
    await expect(delivered).to_have_count(len(recipients), timeout=LIVE_MS)
    in_matrix = await matrix_rows.evaluate_all("rows => rows.map((row) => row.dataset.address)")
    assert set(in_matrix) == recipients
    await expect(page.locator(f'#matrix tr[data-address="{zolc_address}"]')).to_contain_text(
        "Łukasz Żółć"
    )
    await expect(page.locator("#counts")).to_have_text(f"doręczono: {len(recipients)}")
    await screenshot(page, "receipts")

    # Łukasz Żółć acknowledges through the link in the message in his mailbox, on his phone.
    link = await emailed_ack_link(settings, zolc_address, zolc_password)
    phone = await (await new_context(viewport=PHONE, is_mobile=True, has_touch=True)).new_page()
    await phone.goto(link)
    await expect(phone.get_by_text("Łukasz Żółć")).to_be_visible()
    await phone.get_by_role("button", name=ACK_BUTTON).tap()
    await expect(phone.get_by_role("status")).to_contain_text("Otrzymanie potwierdzono")

    # The clerk's open matrix changes by itself: his cell only.
    zolc_cell = page.locator(f'#matrix tr[data-address="{zolc_address}"] .state')
    await expect(zolc_cell).to_have_class(re.compile(r"\bstate-acknowledged\b"), timeout=LIVE_MS)
    await expect(page.locator("#matrix .state-acknowledged")).to_have_count(1)
    await expect(delivered).to_have_count(len(recipients) - 1)
    await expect(page.locator("#counts li")).to_have_text(
        [f"doręczono: {len(recipients) - 1}", "potwierdzono: 1"]
    )
    await screenshot(page, "receipts-acknowledged")

    # The dashboard sums it up: the session is upcoming and its receipts are counted.
    await page.get_by_role("link", name="Pulpit", exact=True).click()
    await expect(page.locator("table[aria-labelledby=upcoming]")).to_contain_text(SESSION_NUMBER)
    await expect(page.get_by_role("link", name=f"Sesja {SESSION_NUMBER}")).to_be_visible()
    await expect(page.locator("main ul.counts li")).to_have_text(
        [f"doręczono: {len(recipients) - 1}", "potwierdzono: 1"]
    )
    await screenshot(page, "dashboard")


async def test_directory_user_outside_the_clerks_group_is_refused_like_a_wrong_password(
    service: Service,
    clerk: CreatedAccount,
    add_councillor: Callable[[str, str], Awaitable[CreatedAccount]],
    page: Page,
    screenshot: Screenshot,
) -> None:
    base_url = f"http://127.0.0.1:{service.web_port}"
    councillor = await add_councillor("Łukasz", "Żółć")  # a real account, not a clerk
    # The same answer as a wrong password: it must not tell that this password was right.
    assert await sign_in(page, base_url, councillor.address, councillor.password) == 401
    await expect(page.locator("#login-error")).to_contain_text("Nieprawidłowy login lub hasło")
    await expect(page.locator("#login-form")).to_be_visible()
    await screenshot(page, "login-refused")
    assert not [c for c in await page.context.cookies() if c["name"] == "mailsvc_session"]
    # Nothing behind the login opens for them.
    await page.goto(f"{base_url}/councillors")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
