"""Rendering the clerks' pages, and what every group of them works with.

Server-rendered (jinja2, ``templates/web/clerk/<name>.html.j2``, both languages in one file via
``L("polski", "English")``); every flow works with plain HTML forms, and ``/static/clerk.js``
adds drag-and-drop uploads and the live receipts matrix. The pages are grouped by area in the
``clerk_*`` modules; ``web.site`` puts their routes behind the gate of ``clerk_signin``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from mailsvc import templating
from mailsvc.config import Settings
from mailsvc.domain.vocabulary import DEFAULT_LANGUAGE, LANGUAGES, state_label
from mailsvc.storage.clerks import ClerkSession
from mailsvc.web.actions import Actor, ClerkActions
from mailsvc.web.auth import LANGUAGE_COOKIE
from mailsvc.web.http import new_nonce, other_language, page_csp, pick_language

STATIC_DIR = templating.TEMPLATES_DIR / "web" / "static"

# A page handler: the request and the signed-in clerk the gate let through.
Handler = Callable[[Request, ClerkSession], Awaitable[Response]]


def choose(language: str, pl: str, en: str) -> str:
    """The English text for English, the Polish one otherwise."""
    return en if language == "en" else pl


class ClerkPages:
    """Renders ``templates/web/clerk/<name>.html.j2`` (both languages in one file)."""

    def __init__(self, settings: Settings, templates_dir: Path | None = None) -> None:
        self.settings = settings
        self.env = templating.environment(templates_dir or templating.TEMPLATES_DIR)
        self.default_language = (
            settings.language if settings.language in LANGUAGES else DEFAULT_LANGUAGE
        )

    def language(self, request: Request) -> str:
        """``?lang=``, else the clerk's remembered choice (cookie), else the service's."""
        return pick_language(
            request, request.cookies.get(LANGUAGE_COOKIE), default=self.default_language
        )

    def render(
        self,
        request: Request,
        name: str,
        clerk: ClerkSession | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        lang = self.language(request)
        nonce = new_nonce()
        csrf = clerk.csrf if clerk else context.pop("login_csrf", "")

        def tr(pl: str, en: str) -> str:
            return choose(lang, pl, en)

        other = other_language(lang)
        html = self.env.get_template(f"web/clerk/{name}.html.j2").render(
            lang=lang,
            L=tr,
            nonce=nonce,
            clerk=clerk,
            csrf=csrf,
            council=self.settings.council.name,
            switch_language=other,
            switch_url=_with_query(request, lang=other),
            path=request.url.path,
            state_label=lambda s: state_label(s, lang),
            **context,
        )
        response = HTMLResponse(
            html,
            status_code=status,
            headers={"content-security-policy": page_csp(nonce, scripts=True)},
        )
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(
                LANGUAGE_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="lax"
            )
        return response

    def problem(
        self, request: Request, clerk: ClerkSession | None, message: str, status: int
    ) -> HTMLResponse:
        return self.render(request, "problem", clerk, status, message=message, code=status)


def _with_query(request: Request, **values: str) -> str:
    params = dict(request.query_params)
    params.update(values)
    return "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())


@dataclass
class ClerkArea:
    """What every group of clerks' pages works with."""

    settings: Settings
    actions: ClerkActions
    pages: ClerkPages

    @property
    def language(self) -> str:
        """The service's language: messages from the handlers are in it (as from the actions),
        whichever language the page around them is shown in."""
        return self.settings.language

    def t(self, pl: str, en: str) -> str:
        return choose(self.language, pl, en)

    @staticmethod
    def actor(clerk: ClerkSession) -> Actor:
        return Actor(clerk.actor, "web")


async def clerk_script(request: Request) -> Response:
    """``/static/clerk.js``: the drop zone and the live matrix (no sign-in needed)."""
    path = STATIC_DIR / "clerk.js"
    body = await asyncio.to_thread(path.read_bytes)
    return Response(
        body,
        media_type="text/javascript; charset=utf-8",
        headers={"cache-control": "no-cache"},
    )
