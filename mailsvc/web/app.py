"""The web app: councillors' acknowledgement links and downloads, the clerks' interface, the API.

``create_app`` assembles the routes explicitly: ``AckRoutes.routes()`` for the councillors'
links, then ``/healthz``, then the routes it is given: ``serve`` gives it the clerks' pages
(``web.clerk_*``) and the JSON API (``web.api``) from ``web.site``. Every response passes through
``SecurityHeaders``.

The acknowledgement link is a capability: whoever holds ``/a/<token>`` may acknowledge for that
councillor, so the token is signed, bound to recipient and distribution, and expires. The GET
only shows what would be acknowledged — mail scanners follow links, so nothing is recorded until
the councillor presses the button (an HTML form POST; no JavaScript anywhere).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailsvc import templating
from mailsvc.config import DistributionSettings
from mailsvc.distribution.ackpage import AckBackend, AckView
from mailsvc.domain.vocabulary import LANGUAGES, state_label
from mailsvc.domain.wording import format_pages, format_size
from mailsvc.receipts.tokens import TokenSigner
from mailsvc.web.http import (
    content_disposition,
    new_nonce,
    other_language,
    page_csp,
    pick_language,
)

log = logging.getLogger(__name__)

DEFAULT_TIME_ZONE = DistributionSettings.timezone  # the configuration's default
_USER_AGENT_MAX = 512

# Headers every response gets unless it set its own. Pages replace the CSP with one that allows
# their own <style> element by nonce (``http.page_csp``); anything else (downloads, errors) may
# load nothing.
_BASE_HEADERS = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",  # the token is in the URL
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}


# --- the app ------------------------------------------------------------------------------------


def create_app(
    *,
    signer: TokenSigner,
    backend: AckBackend,
    language: str = "pl",
    templates_dir: Path | None = None,
    office_address: str = "",
    time_zone: str = DEFAULT_TIME_ZONE,
    clock: Callable[[], datetime] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    https: bool = False,
) -> Starlette:
    """The Starlette app serving acknowledgement links, downloads and ``/healthz``.

    ``language`` is used when neither ``?lang=`` nor the councillor's preference says otherwise;
    ``office_address`` is whom an expired link tells the councillor to contact; ``time_zone``
    is the council's, for showing when an acknowledgement (stored in UTC) was made; ``clock``
    returns the current time (aware, or naive UTC) and exists for tests. ``extra_routes``: the
    clerks' interface and the API (``web.site.clerk_routes``), when the service serves them.
    ``https``: the public address is https (``web.public_url``): responses carry HSTS.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r}: expected one of {', '.join(LANGUAGES)}")
    pages = Pages(templates_dir=templates_dir, default_language=language)
    ack = AckRoutes(
        signer=signer,
        backend=backend,
        pages=pages,
        office_address=office_address,
        zone=ZoneInfo(time_zone),
        clock=clock or _utc_now,
    )
    routes: list[BaseRoute] = [*ack.routes(), Route("/healthz", healthz, methods=["GET"])]
    routes += extra_routes
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, https=https)],
        exception_handlers={404: pages.not_found_handler},
    )


async def healthz(request: Request) -> Response:
    """Liveness for load balancers and monitoring: the app answers."""
    return PlainTextResponse("ok\n")


HSTS = "max-age=31536000; includeSubDomains"


class SecurityHeaders:
    """ASGI middleware adding ``_BASE_HEADERS`` (and HSTS when served over https) to every
    response that has not set them."""

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.headers = {**_BASE_HEADERS, **({"strict-transport-security": HSTS} if https else {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Pages:
    """Renders ``templates/web/<name>.<lang>.html.j2`` into responses with a per-page nonce."""

    def __init__(self, *, templates_dir: Path | None, default_language: str) -> None:
        # Resolved now rather than at import so tests may point TEMPLATES_DIR elsewhere.
        self._env = templating.environment(templates_dir or templating.TEMPLATES_DIR)
        self.default_language = default_language

    def language(self, request: Request, preferred: str | None = None) -> str:
        """``?lang=`` if supported, else the councillor's preference, else the app's default."""
        return pick_language(request, preferred, default=self.default_language)

    def render(
        self, request: Request, name: str, language: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        nonce = new_nonce()
        template = self._env.select_template(templating.template_names(f"web/{name}", language))
        other = other_language(language)
        html = template.render(
            lang=language,
            nonce=nonce,
            switch_language=other,
            switch_url=f"?lang={other}",  # relative: the same path, whatever it is
            **context,
        )
        headers = {"content-security-policy": page_csp(nonce)}
        return HTMLResponse(html, status_code=status, headers=headers)

    def error(self, request: Request, kind: str, status: int, **context: Any) -> HTMLResponse:
        """An error page: ``kind`` is not-found, link-expired-download or forbidden."""
        context.setdefault("office_address", "")
        return self.render(
            request, "error.html", self.language(request), status, kind=kind, **context
        )

    async def not_found_handler(self, request: Request, exc: Exception) -> Response:
        """Starlette's 404 (no route matched) as our own page."""
        return self.error(request, "not-found", 404)


@dataclass(frozen=True)
class AckRoutes:
    """``GET|POST /a/{token}`` (acknowledgement) and ``GET /d/{token}`` (document download)."""

    signer: TokenSigner
    backend: AckBackend
    pages: Pages
    office_address: str
    zone: tzinfo
    clock: Callable[[], datetime]

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/a/{token}", self.show, methods=["GET"]),
            Route("/a/{token}", self.acknowledge, methods=["POST"]),
            Route("/d/{token}", self.download, methods=["GET"]),
        ]

    async def show(self, request: Request) -> Response:
        """The confirmation page; records nothing (link scanners fetch it too)."""
        claim = self.signer.verify_ack(request.path_params["token"], self.clock())
        if claim is None:
            return self.pages.error(request, "not-found", 404)
        view = await self.backend.ack_view(claim.recipient_id, claim.distribution_id)
        if view is None:
            return self.pages.error(request, "not-found", 404)
        if view.acknowledged_at is not None:
            return self._ack_page(request, view, "acknowledged")
        if claim.expired:
            return self._ack_page(request, view, "expired", status=410)
        return self._ack_page(request, view, "pending")

    async def acknowledge(self, request: Request) -> Response:
        """Record the acknowledgement (once) and thank the councillor."""
        if _cross_site(request):
            return self.pages.error(request, "forbidden", 403)
        claim = self.signer.verify_ack(request.path_params["token"], self.clock())
        if claim is None:
            return self.pages.error(request, "not-found", 404)
        view = await self.backend.ack_view(claim.recipient_id, claim.distribution_id)
        if view is None:
            return self.pages.error(request, "not-found", 404)
        if view.acknowledged_at is not None:
            return self._ack_page(request, view, "acknowledged")
        if claim.expired:
            return self._ack_page(request, view, "expired", status=410)
        view = await self.backend.acknowledge(
            claim.recipient_id, claim.distribution_id, self._evidence(request)
        )
        return self._ack_page(request, view, "thanks")

    async def download(self, request: Request) -> Response:
        """Stream one document to the recipient the token was made for."""
        claim = self.signer.verify_download(request.path_params["token"], self.clock())
        if claim is None:
            return self.pages.error(request, "not-found", 404)
        if claim.expired:
            return self.pages.error(
                request, "download-expired", 410, office_address=self.office_address
            )
        document = await self.backend.document(claim.recipient_id, claim.sha256)
        if document is None:
            return self.pages.error(request, "not-found", 404)
        if not document.path.is_file():
            log.error("document %s: file %s is missing", claim.sha256, document.path)
            return self.pages.error(request, "not-found", 404)
        return FileResponse(
            document.path,
            media_type=document.media_type,
            headers={"content-disposition": content_disposition(document.filename)},
        )

    def _ack_page(
        self, request: Request, view: AckView, state: str, status: int = 200
    ) -> HTMLResponse:
        language = self.pages.language(request, view.language)
        acknowledged = None
        if view.acknowledged_at is not None:
            local = _as_utc(view.acknowledged_at).astimezone(self.zone)
            acknowledged = {"date": templating.format_date(local, language), "time": _hm(local)}
        documents = [
            {
                "name": d.name,
                "size": format_size(d.size, language),
                "pages": format_pages(d.pages, language) if d.pages is not None else "",
                "download_url": d.download_url,
            }
            for d in view.documents
        ]
        recorded = []
        for kind, at in view.recorded:
            local = _as_utc(at).astimezone(self.zone)
            recorded.append(
                {
                    "label": state_label(kind, language),
                    "date": templating.format_date(local, language),
                    "time": _hm(local),
                }
            )
        return self.pages.render(
            request,
            "ack.html",
            language,
            status,
            state=state,
            view=view,
            recorded=recorded,
            session_date=templating.format_date(view.session_at, language),
            session_time=_hm(view.session_at),
            documents=documents,
            acknowledged=acknowledged,
            action=f"?lang={language}",  # posts back to this same URL
            office_address=self.office_address,
        )

    def _evidence(self, request: Request) -> str:
        """What is stored with the acknowledgement: when, from where, with what."""
        client = request.client.host if request.client else ""
        user_agent = request.headers.get("user-agent", "")[:_USER_AGENT_MAX]
        at = _as_utc(self.clock()).astimezone(UTC)
        return json.dumps(
            {"at": at.isoformat(timespec="seconds"), "ip": client, "user_agent": user_agent},
            ensure_ascii=False,
        )


# --- small pure helpers -------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC time; naive times are UTC by the project's convention."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hm(moment: datetime) -> str:
    return f"{moment.hour}:{moment.minute:02d}"


def _cross_site(request: Request) -> bool:
    """True if the POST evidently comes from another site's page.

    ``Origin: null`` is not counted as foreign: our own pages send ``Referrer-Policy:
    no-referrer``, under which browsers serialise the origin of a form POST as ``null``. The
    token in the URL is what really protects the action (another site cannot know it); this
    check is defence in depth, helped by ``Sec-Fetch-Site`` where the browser sends it.
    """
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        if not _same_host(origin, request.headers.get("host", "")):
            return True
    site = request.headers.get("sec-fetch-site")
    return site is not None and site not in ("same-origin", "none")


def _same_host(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or not host:
        return False
    default_port = ":443" if parts.scheme == "https" else ":80"

    def normal(netloc: str) -> str:
        netloc = netloc.lower()
        return netloc.removesuffix(default_port)

    return normal(parts.netloc) == normal(host)
