"""The acknowledgement page and downloads over real HTTP: uvicorn in the test's loop + httpx.

The backend is an in-memory double of ``AckBackend`` (the storage-backed one is tested with the
distributions); everything else — tokens, routing, templates, headers, the server — is real.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mailsvc.distribution.ackpage import AckDocument, AckView, DocumentFile
from mailsvc.domain.wording import format_pages, format_size
from mailsvc.receipts.tokens import TokenSigner
from mailsvc.web.app import create_app
from mailsvc.web.http import content_disposition
from mailsvc.web.server import WebServer, WebServerError, web_server

# Not in the PostgreSQL pass (make test-postgresql): an in-memory backend.
pytestmark = pytest.mark.no_database

KEY = b"0123456789abcdef0123456789abcdef"
RECIPIENT, DISTRIBUTION = 7, 3
SHA = "ab" * 32
OFFICE = "biuro.rady@rada.example.pl"
# 10:05 UTC on 7 May 2026 is 12:05 in Warsaw (CEST).
FIRST_POST = datetime(2026, 5, 7, 10, 5, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = FIRST_POST

    def __call__(self) -> datetime:
        return self.now


@dataclass
class MemoryBackend:
    """AckBackend over dictionaries, recording every call it gets."""

    clock: Clock
    views: dict[tuple[int, int], AckView] = field(default_factory=dict)
    files: dict[tuple[int, str], DocumentFile] = field(default_factory=dict)
    acknowledge_calls: list[tuple[int, int, str]] = field(default_factory=list)

    async def ack_view(self, recipient_id: int, distribution_id: int) -> AckView | None:
        return self.views.get((recipient_id, distribution_id))

    async def acknowledge(self, recipient_id: int, distribution_id: int, evidence: str) -> AckView:
        self.acknowledge_calls.append((recipient_id, distribution_id, evidence))
        view = self.views[(recipient_id, distribution_id)]
        if view.acknowledged_at is None:  # idempotent: the first time stays
            at = self.clock().astimezone(UTC).replace(tzinfo=None)
            view = replace(view, acknowledged_at=at)
            self.views[(recipient_id, distribution_id)] = view
        return view

    async def document(self, recipient_id: int, sha256: str) -> DocumentFile | None:
        return self.files.get((recipient_id, sha256))


@dataclass
class Site:
    client: httpx.AsyncClient
    server: WebServer
    backend: MemoryBackend
    signer: TokenSigner
    clock: Clock
    document_bytes: bytes

    def ack_url(
        self, expires_in: timedelta = timedelta(days=30), signer: TokenSigner | None = None
    ) -> str:
        token = (signer or self.signer).ack_token(
            RECIPIENT, DISTRIBUTION, self.clock.now + expires_in
        )
        return f"/a/{token}"

    def download_url(self, sha: str = SHA, expires_in: timedelta = timedelta(days=30)) -> str:
        return f"/d/{self.signer.download_token(RECIPIENT, sha, self.clock.now + expires_in)}"


def _view(**changes: object) -> AckView:
    view = AckView(
        councillor_name="Łukasz Żółć",
        council="Rada Miejska w Przykładowie",
        session_number="XV/2026",
        session_kind="extraordinary",
        session_at=datetime(2026, 5, 14, 16, 0),
        place="Sala Sesyjna Ratusza, ul. Rynek 1",
        distribution_kind="notice",
        documents=(
            AckDocument("Porządek obrad.pdf", 48_000, 2, "cd" * 32, None),
            AckDocument("Projekt uchwały budżetowej.pdf", 31_457_280, 212, SHA, "/d/link"),
        ),
        acknowledged_at=None,
        language="pl",
    )
    return replace(view, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    clock = Clock()
    backend = MemoryBackend(clock)
    backend.views[(RECIPIENT, DISTRIBUTION)] = _view()
    content = secrets.token_bytes(300_000)
    path = tmp_path / SHA
    path.write_bytes(content)
    backend.files[(RECIPIENT, SHA)] = DocumentFile(
        path, "Uchwała nr 12 – „budżet”.pdf", "application/pdf", len(content)
    )
    signer = TokenSigner(KEY)
    app = create_app(signer=signer, backend=backend, office_address=OFFICE, clock=clock)
    server = web_server(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            yield Site(client, server, backend, signer, clock, content)
    finally:
        await server.stop()


def _text(html: str) -> str:
    """The page's visible text, whitespace collapsed, for phrase assertions."""
    return re.sub(r"[ \t\r\n]+", " ", re.sub(r"<[^>]+>", " ", html))


# --- the confirmation page ----------------------------------------------------------------------


async def test_get_shows_the_session_and_records_nothing(site: Site) -> None:
    response = await site.client.get(site.ack_url())
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    text = _text(response.text)
    for expected in (
        "Rada Miejska w Przykładowie",
        "Łukasz Żółć",
        "XV/2026 (sesja nadzwyczajna)",
        "14 maja 2026, godz. 16:00",
        "Sala Sesyjna Ratusza, ul. Rynek 1",
        "zawiadomienia o sesji wraz z materiałami",
        "Projekt uchwały budżetowej.pdf",
        "30,0\xa0MB, 212\xa0stron",
        "46,9\xa0KB, 2\xa0strony",
        "Potwierdzam otrzymanie",
    ):
        assert expected in text, expected
    assert '<html lang="pl">' in response.text
    assert '<form method="post" action="?lang=pl">' in response.text
    assert 'href="/d/link"' in response.text
    assert '<meta name="viewport"' in response.text
    assert "<script" not in response.text
    assert site.backend.acknowledge_calls == []


async def test_post_records_once_and_a_second_post_shows_the_first_time(site: Site) -> None:
    url = site.ack_url()
    headers = {"user-agent": "Mozilla/5.0 (X11; Linux) Radny"}
    first = await site.client.post(url, headers=headers)
    assert first.status_code == 200
    assert "Dziękujemy" in first.text
    assert "7 maja 2026 o godz. 12:05" in _text(first.text)  # shown in Warsaw time
    assert "<form" not in first.text

    site.clock.now = FIRST_POST + timedelta(hours=3)
    second = await site.client.post(url, headers=headers)
    assert second.status_code == 200
    assert "Otrzymanie już potwierdzono" in second.text
    assert "7 maja 2026 o godz. 12:05" in _text(second.text)

    assert len(site.backend.acknowledge_calls) == 1
    recipient, distribution, evidence = site.backend.acknowledge_calls[0]
    assert (recipient, distribution) == (RECIPIENT, DISTRIBUTION)
    assert json.loads(evidence) == {
        "at": "2026-05-07T10:05:00+00:00",
        "ip": "127.0.0.1",
        "user_agent": "Mozilla/5.0 (X11; Linux) Radny",
    }

    # Opening the link again later says when it was acknowledged and offers no button.
    again = await site.client.get(url)
    assert "Otrzymanie już potwierdzono" in again.text
    assert "<form" not in again.text


# --- links that must not be credited ------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_forged_tokens_get_404_and_are_never_credited(site: Site, method: str) -> None:
    genuine = site.ack_url().removeprefix("/a/")
    tampered = genuine[:-2] + ("AA" if genuine[-2:] != "AA" else "BB")
    forged = [
        "/a/garbage",
        f"/a/{tampered}",
        site.ack_url(signer=TokenSigner(b"another key of thirty-two bytes!")),
        f"/a/{site.signer.download_token(RECIPIENT, SHA, FIRST_POST + timedelta(days=1))}",
        f"/a/{site.signer.verp_token(RECIPIENT)}",
    ]
    for url in forged:
        response = await site.client.request(method, url)
        assert response.status_code == 404, url
        assert "Nie znaleziono strony" in response.text
    assert site.backend.acknowledge_calls == []


async def test_unknown_recipient_gets_404(site: Site) -> None:
    token = site.signer.ack_token(RECIPIENT + 1, DISTRIBUTION, FIRST_POST + timedelta(days=1))
    response = await site.client.post(f"/a/{token}")
    assert response.status_code == 404
    assert site.backend.acknowledge_calls == []


async def test_expired_link_says_so_names_the_office_and_records_nothing(site: Site) -> None:
    url = site.ack_url(expires_in=-timedelta(seconds=1))
    page = await site.client.get(url)
    assert page.status_code == 410
    assert "Link wygasł" in page.text
    assert f'href="mailto:{OFFICE}"' in page.text
    assert "XV/2026" in page.text
    assert "<form" not in page.text
    posted = await site.client.post(url)
    assert posted.status_code == 410
    assert site.backend.acknowledge_calls == []


# --- cross-site form posts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://127.0.0.1:1"},  # same host, another port: another origin
        {"origin": "not a url"},
        {"sec-fetch-site": "cross-site"},
        {"origin": "null", "sec-fetch-site": "cross-site"},
    ],
)
async def test_cross_site_post_is_refused_with_403(site: Site, headers: dict[str, str]) -> None:
    response = await site.client.post(site.ack_url(), headers=headers)
    assert response.status_code == 403
    assert "nic nie zapisano" in response.text
    assert site.backend.acknowledge_calls == []


async def test_post_from_our_own_page_is_accepted(site: Site) -> None:
    own = f"http://127.0.0.1:{site.server.port}"
    response = await site.client.post(
        site.ack_url(), headers={"origin": own, "sec-fetch-site": "same-origin"}
    )
    assert response.status_code == 200
    assert len(site.backend.acknowledge_calls) == 1


async def test_post_with_origin_null_from_no_referrer_page_is_accepted(site: Site) -> None:
    # Browsers send "Origin: null" for form posts from a page with Referrer-Policy: no-referrer,
    # which is what our own page sends.
    response = await site.client.post(
        site.ack_url(), headers={"origin": "null", "sec-fetch-site": "same-origin"}
    )
    assert response.status_code == 200
    assert len(site.backend.acknowledge_calls) == 1


# --- downloads ----------------------------------------------------------------------------------


async def test_download_streams_the_exact_bytes_with_an_rfc6266_filename(site: Site) -> None:
    response = await site.client.get(site.download_url())
    assert response.status_code == 200
    assert response.content == site.document_bytes
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-length"] == str(len(site.document_bytes))
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; ")
    assert 'filename="Uchwala nr 12 _ _budzet_.pdf"' in disposition
    assert (
        "filename*=UTF-8''Uchwa%C5%82a%20nr%2012%20%E2%80%93%20%E2%80%9Ebud%C5%BCet%E2%80%9D.pdf"
        in disposition
    )
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_download_refuses_expired_forged_and_unknown(site: Site) -> None:
    expired = await site.client.get(site.download_url(expires_in=-timedelta(seconds=1)))
    assert expired.status_code == 410
    assert "Link do pobrania wygasł" in expired.text
    ack_token = site.ack_url().removeprefix("/a/")
    forged = await site.client.get(f"/d/{ack_token}")
    assert forged.status_code == 404
    unknown = await site.client.get(site.download_url(sha="ef" * 32))
    assert unknown.status_code == 404
    for response in (expired, forged, unknown):
        assert site.document_bytes[:64] not in response.content


# --- languages ----------------------------------------------------------------------------------


async def test_lang_en_switches_page_and_thank_you_to_english(site: Site) -> None:
    page = await site.client.get(site.ack_url() + "?lang=en")
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    text = _text(page.text)
    assert "XV/2026 (extraordinary session)" in text
    assert "14 May 2026, 16:00" in text
    assert "30.0\xa0MB, 212\xa0pages" in text
    assert "I acknowledge receipt" in text
    assert '<form method="post" action="?lang=en">' in page.text
    assert 'href="?lang=pl"' in page.text  # the way back to Polish

    thanks = await site.client.post(site.ack_url() + "?lang=en")
    assert "Receipt acknowledged on 7 May 2026 at 12:05" in _text(thanks.text)


async def test_councillor_preference_sets_the_language_and_lang_overrides_it(site: Site) -> None:
    site.backend.views[(RECIPIENT, DISTRIBUTION)] = _view(language="en")
    preferred = await site.client.get(site.ack_url())
    assert '<html lang="en">' in preferred.text
    overridden = await site.client.get(site.ack_url() + "?lang=pl")
    assert '<html lang="pl">' in overridden.text


# --- security -----------------------------------------------------------------------------------


async def test_pages_carry_security_headers_and_a_matching_style_nonce(site: Site) -> None:
    response = await site.client.get(site.ack_url())
    headers = response.headers
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    nonce = re.search(r"style-src 'nonce-([A-Za-z0-9_-]+)'", csp)
    assert nonce is not None
    assert f'<style nonce="{nonce[1]}">' in response.text
    second = await site.client.get(site.ack_url())
    assert nonce[1] not in second.headers["content-security-policy"]  # fresh per response


@pytest.mark.parametrize("path", ["/healthz", "/no/such/page", "/a/garbage"])
async def test_every_response_has_the_base_headers(site: Site, path: str) -> None:
    response = await site.client.get(path)
    for name in ("x-frame-options", "referrer-policy", "cache-control", "content-security-policy"):
        assert name in response.headers, (path, name)
    assert "server" not in response.headers


async def test_hostile_text_is_escaped(site: Site) -> None:
    site.backend.views[(RECIPIENT, DISTRIBUTION)] = _view(
        session_number="<script>alert(1)</script>",
        place='"><img src=x onerror=alert(2)>',
        documents=(AckDocument("<script>alert(3)</script>.pdf", 10, None, SHA, None),),
    )
    response = await site.client.get(site.ack_url())
    assert response.status_code == 200
    assert "<script" not in response.text
    assert "<img" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "&lt;script&gt;alert(3)&lt;/script&gt;.pdf" in response.text


async def test_unknown_path_gets_our_404_page_in_the_requested_language(site: Site) -> None:
    response = await site.client.get("//evil.example/x?lang=en")
    assert response.status_code == 404
    assert "Page not found" in response.text
    assert 'href="?lang=pl"' in response.text  # never a link built from the path


async def test_healthz(site: Site) -> None:
    response = await site.client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


# --- the server ---------------------------------------------------------------------------------


async def test_server_binds_port_zero_and_stops_listening(site: Site) -> None:
    port = site.server.port
    assert port > 0
    await site.server.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as fresh:
            await fresh.get(f"http://127.0.0.1:{port}/healthz")


async def test_port_in_use_raises_instead_of_exiting(site: Site) -> None:
    other = web_server(create_app(signer=site.signer, backend=site.backend), "127.0.0.1", 0)
    taken = web_server(
        create_app(signer=site.signer, backend=site.backend), "127.0.0.1", site.server.port
    )
    with pytest.raises(WebServerError, match="cannot listen"):
        await taken.start()
    await other.start()  # the failure left the loop and the process fine
    await other.stop()


# --- the pure helpers behind the page (no server needed) ----------------------------------------


@pytest.mark.parametrize(
    ("pages", "polish", "english"),
    [
        (1, "1 strona", "1 page"),
        (2, "2 strony", "2 pages"),
        (4, "4 strony", "4 pages"),
        (5, "5 stron", "5 pages"),
        (12, "12 stron", "12 pages"),
        (22, "22 strony", "22 pages"),
        (112, "112 stron", "112 pages"),
        (124, "124 strony", "124 pages"),
    ],
)
def test_page_counts_use_polish_plural_forms(pages: int, polish: str, english: str) -> None:
    assert format_pages(pages, "pl") == polish.replace(" ", "\xa0")
    assert format_pages(pages, "en") == english.replace(" ", "\xa0")


@pytest.mark.parametrize(
    ("size", "polish", "english"),
    [
        (0, "0 B", "0 B"),
        (1023, "1023 B", "1023 B"),
        (1024, "1,0 KB", "1.0 KB"),
        (250 * 1024, "250 KB", "250 KB"),
        (int(2.5 * 1024 * 1024), "2,5 MB", "2.5 MB"),
    ],
)
def test_sizes_use_the_language_decimal_mark(size: int, polish: str, english: str) -> None:
    assert format_size(size, "pl") == polish.replace(" ", "\xa0")
    assert format_size(size, "en") == english.replace(" ", "\xa0")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("plan.pdf", "attachment; filename=\"plan.pdf\"; filename*=UTF-8''plan.pdf"),
        (
            "Żółć.pdf",
            "attachment; filename=\"Zolc.pdf\"; filename*=UTF-8''%C5%BB%C3%B3%C5%82%C4%87.pdf",
        ),
        ('a"b\r\n.pdf', "attachment; filename=\"a_b__.pdf\"; filename*=UTF-8''a%22b%0D%0A.pdf"),
        (
            "../../etc/passwd",
            "attachment; filename=\".._.._etc_passwd\"; filename*=UTF-8''.._.._etc_passwd",
        ),
        ("", "attachment; filename=\"document\"; filename*=UTF-8''document"),
    ],
)
def test_content_disposition_is_safe_and_keeps_diacritics(filename: str, expected: str) -> None:
    assert content_disposition(filename) == expected
