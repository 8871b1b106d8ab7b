"""Fixtures for the browser tests: one headless Chromium per test session, a fresh context per test.

The browser is Debian's ``chromium`` package driven by Playwright's async API; Playwright's own
browser download is never used (``executable_path``), so nothing is fetched at test time. A
missing browser or Playwright fails the tests with what to install: ``make test`` installs both.

The service side reuses the integration fixtures (``settings``, ``directory``, ``parts``,
``service``, ``add_councillor``): they are re-exported here by name, because ``pytest_plugins``
may only be declared in the root conftest.

One event loop for the whole e2e run: a Playwright connection belongs to the loop that started
it, so a browser shared by several tests needs their fixtures and bodies on that same loop.
pytest-asyncio gives each test a loop of its own through its ``_function_scoped_runner``
fixture; inside ``tests/e2e`` that fixture is overridden to hand out the session's runner.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import pytest_asyncio

from tests.integration import conftest as integration

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Locator, Page

# The integration fixtures, visible to the tests below this directory.
settings = integration.settings
directory = integration.directory
parts = integration.parts
service = integration.service
add_councillor = integration.add_councillor

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Generous for a loaded two-core machine, short enough that a broken page fails quickly.
TIMEOUT_MS = 15_000

NewContext = Callable[..., Awaitable["BrowserContext"]]


@pytest.fixture
def _function_scoped_runner(_session_scoped_runner: Any) -> Any:
    """Every test and fixture under tests/e2e runs on the session's loop (see the docstring)."""
    return _session_scoped_runner


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from Debian's package, launched once for all the e2e tests."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "Playwright for Python is not installed: run `make test`, or "
            "`.venv/bin/pip install -e '.[dev]'`",
            pytrace=False,
        )
    if shutil.which(CHROMIUM) is None:  # absent, or not an executable file
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the browser tests need Debian's chromium package; run "
            "`make test` (it installs it) or `apt-get install --no-install-recommends chromium`",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        # --lang: the browser's own widgets (date inputs, file pickers) in Polish, as clerks see.
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--lang=pl-PL"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture
async def new_context(browser: Browser) -> AsyncIterator[NewContext]:
    """Open browser contexts (Polish, Warsaw time, desktop-sized unless told otherwise).

    Each is a fresh profile: no cookies or storage shared with other tests or contexts. All are
    closed when the test ends.
    """
    opened: list[BrowserContext] = []

    async def open_context(**options: Any) -> BrowserContext:
        options.setdefault("viewport", DESKTOP)
        options.setdefault("locale", "pl-PL")
        options.setdefault("timezone_id", "Europe/Warsaw")
        context = await browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        await context.close()


@pytest_asyncio.fixture
async def context(new_context: NewContext) -> BrowserContext:
    """The test's browser context: 1280×900, pl-PL."""
    return await new_context()


@pytest_asyncio.fixture
async def page(context: BrowserContext) -> Page:
    """A tab in the test's context."""
    return await context.new_page()


class Screenshot(Protocol):
    """``await screenshot(page, "ack-page")``; ``mask``: elements painted over (passwords)."""

    async def __call__(self, page: Page, name: str, *, mask: Sequence[Locator] = ()) -> Path: ...


async def save_screenshot(page: Page, name: str, *, mask: Sequence[Locator] = ()) -> Path:
    """Save the whole page (not only the viewport) as ``docs/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path, full_page=True, mask=list(mask))
    return path


@pytest.fixture
def screenshot() -> Screenshot:
    """``await screenshot(page, "ack-page")`` saves docs/screenshots/ack-page.png (full page)."""
    return save_screenshot
