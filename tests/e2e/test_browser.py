"""The service through a real headless Chromium: what councillors and clerks see and click.

Everything behind the browser is real: slapd and Dovecot from the local stack, the service's
SMTP servers, delivery workers, scheduler and web server, and mail read back over IMAP. Each test
saves screenshots of the pages it visits to docs/screenshots/ (shown in the README).
"""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fpdf import FPDF

from mailsvc.app import Service
from mailsvc.config import Settings
from mailsvc.councillors import CreatedAccount
from mailsvc.domain.receipts import EventKind
from mailsvc.mailbox import read_inbox
from tests.e2e.conftest import PHONE, NewContext, Screenshot

try:
    from playwright.async_api import expect
except ImportError as missing:  # the fixture `browser` says the same for tests without pages
    raise ImportError(
        "Playwright for Python is not installed: run `make test`, or "
        "`.venv/bin/pip install -e '.[dev]'`"
    ) from missing

SESSION_NUMBER = "XV/2026"
DOCUMENT_NAME = "Projekt uchwały – żłobki.pdf"
ACK_BUTTON = "Potwierdzam otrzymanie"
# Mail and receipts arrive through real servers; bound every wait so a failure is quick.
WITHIN = 20.0


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


async def emailed_ack_link(settings: Settings, person: CreatedAccount) -> str:
    """The acknowledgement link from the distribution message in ``person``'s mailbox (IMAP)."""

    async def find() -> str | None:
        inbox = await read_inbox(
            settings.stack.host, settings.stack.imap_port, person.address, person.password
        )
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

    link: str = await poll(find, f"the distribution message in {person.address}'s mailbox")
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
    link = await emailed_ack_link(settings, zolc)
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
