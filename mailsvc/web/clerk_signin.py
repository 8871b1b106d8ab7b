"""Who the clerk is: sign-in, sign-out, and the gate every other clerks' page passes.

The gate (:meth:`ClerkGate.page`) wants a signed-in clerk (a GET without one is sent to
``/login?next=…``) and, on a POST, the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``); an :class:`~mailsvc.web.actions.ActionError` from the page becomes the
problem page with its status. Sign-in itself is described in ``auth.py``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailsvc.storage.clerks import ClerkSession, WebStore
from mailsvc.storage.guard import PasswordGuard, at_least, guard_keys
from mailsvc.web.actions import ActionError, Actor
from mailsvc.web.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SECURE_SESSION_COOKIE,
    SESSION_COOKIE,
    ClerkAuth,
    LoginResult,
    csrf_ok,
)
from mailsvc.web.forms import MAX_FIELDS, MAX_FILES, form_text, safe_next
from mailsvc.web.pages import ClerkArea, Handler

# A refused sign-in answers after at least this long, whatever made it fail.
FAILED_LOGIN_SECONDS = 0.5


@dataclass
class ClerkGate(ClerkArea):
    """``/login``, ``/logout`` and the check in front of every other page."""

    auth: ClerkAuth
    store: WebStore
    guard: PasswordGuard
    secure_cookies: bool
    idle: timedelta = field(init=False)
    lifetime: timedelta = field(init=False)
    recheck: timedelta = field(init=False)
    session_cookie: str = field(init=False)

    def __post_init__(self) -> None:
        self.idle = timedelta(minutes=self.settings.web.session_minutes)
        self.lifetime = timedelta(hours=self.settings.web.session_max_hours)
        self.recheck = timedelta(minutes=self.settings.web.recheck_minutes)
        self.session_cookie = SECURE_SESSION_COOKIE if self.secure_cookies else SESSION_COOKIE

    # --- the gate -------------------------------------------------------------------------------

    async def current(self, request: Request) -> ClerkSession | None:
        token = request.cookies.get(self.session_cookie)
        if not token or len(token) > 200:
            return None
        session = await self.store.session(token, self.idle, self.lifetime)
        if session is None:
            return None
        if session.checked_at is None or session.last_seen - session.checked_at > self.recheck:
            still = await self.auth.still_clerk(session.clerk)
            if still is False:
                await self.store.end_session(session.id)
                await self.actions.record(
                    Actor(session.actor, "web"),
                    "session",
                    "web-session-ended",
                    reason="not-a-clerk",
                )
                return None
            if still:
                await self.store.mark_checked(session.id)
        return session

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await self._pass(request, handler)
            finally:
                await request.close()  # uploads' temporary files

        return endpoint

    async def _pass(self, request: Request, handler: Handler) -> Response:
        clerk = await self.current(request)
        if clerk is None:
            if request.method == "GET":
                target = request.url.path
                if request.url.query:
                    target += f"?{request.url.query}"
                return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
            return self._login_page(
                request,
                403,
                self.t(
                    "Sesja wygasła lub nie jesteś zalogowany. Zaloguj się ponownie.",
                    "Your session has expired or you are not signed in. Sign in again.",
                ),
            )
        if request.method == "POST":
            try:
                form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS)
            except Exception:  # starlette raises HTTPException(400) on a malformed body
                return self.pages.problem(
                    request, clerk, self.t("Nieprawidłowy formularz.", "Malformed form."), 400
                )
            given = form.get(CSRF_FIELD)
            token = given if isinstance(given, str) else request.headers.get(CSRF_HEADER)
            if not csrf_ok(clerk.csrf, token):
                return self.pages.problem(
                    request,
                    clerk,
                    self.t(
                        "Brak lub nieprawidłowy token formularza (CSRF). Odśwież stronę i "
                        "spróbuj ponownie.",
                        "The form's token (CSRF) is missing or wrong. Reload the page and "
                        "try again.",
                    ),
                    403,
                )
        try:
            return await handler(request, clerk)
        except ActionError as exc:
            return self.pages.problem(request, clerk, exc.message, exc.status)

    # --- sign-in and sign-out -------------------------------------------------------------------

    def _login_page(self, request: Request, status: int = 200, message: str = "") -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or self.auth.new_login_nonce()
        context: dict[str, Any] = {
            "message": message,
            "next": safe_next(request.query_params.get("next")),
        }
        response = self.pages.render(
            request, "login", None, status, login_csrf=self.auth.login_csrf(nonce), **context
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
            path="/login",
        )
        return response

    async def login_form(self, request: Request) -> Response:
        if await self.current(request) is not None:
            return RedirectResponse("/", 303)
        return self._login_page(request)

    async def login(self, request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=20)
        if not self.auth.login_csrf_ok(
            request.cookies.get(LOGIN_COOKIE), form_text(form, CSRF_FIELD, 200)
        ):
            return self._login_page(
                request,
                403,
                self.t(
                    "Formularz logowania wygasł lub nie pochodzi z tej strony (CSRF). "
                    "Spróbuj ponownie.",
                    "The sign-in form has expired or did not come from this site (CSRF). "
                    "Try again.",
                ),
            )
        login = form_text(form, "username", 254)
        password = form_text(form, "password", 1025)
        address = self.auth.address(login)
        client = request.client.host if request.client else "unknown"
        keys = guard_keys(client, address)
        # The attempt is reserved (counted as failed) before the password is checked: however
        # many sign-ins run at once, no more than web.login_attempts checks get through.
        wait = await self.guard.reserve(keys)
        if wait > 0:
            minutes = max(1, int(wait // 60) + 1)
            response = self._login_page(
                request,
                429,
                self.t(
                    f"Zbyt wiele nieudanych prób logowania. Spróbuj ponownie za {minutes} min.",
                    f"Too many failed sign-in attempts. Try again in {minutes} min.",
                ),
            )
            response.headers["retry-after"] = str(int(wait) + 1)
            return response
        started = time.monotonic()
        outcome = await self.auth.login(login, password)
        actor = Actor(f"{outcome.name} <{outcome.address}>" if outcome.name else address, "web")
        if outcome.result is LoginResult.UNAVAILABLE:
            await self.guard.release(keys)
            return self._login_page(
                request,
                503,
                self.t(
                    "Katalog użytkowników jest chwilowo niedostępny. Spróbuj za chwilę.",
                    "The user directory is unavailable at the moment. Try again shortly.",
                ),
            )
        if outcome.result is not LoginResult.OK:
            await self.actions.record(
                actor, "sign in", "web-login-refused", reason=outcome.result.value, ip=client
            )
            # One answer, in the same time, for an unknown login, a wrong password and a right
            # password of someone who is not a clerk: none of them tells a guesser anything.
            await at_least(started, FAILED_LOGIN_SECONDS)
            return self._login_page(
                request,
                401,
                self.t("Nieprawidłowy login lub hasło.", "Wrong login or password."),
            )
        await self.guard.succeeded(keys)
        token, clerk = await self.store.open_session(outcome.address, outcome.name)
        await self.actions.record(self.actor(clerk), "sign in", "web-login", ip=client)
        response = RedirectResponse(safe_next(form_text(form, "next", 2000)), 303)
        response.set_cookie(
            self.session_cookie,
            token,
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies,
            path="/",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    async def logout(self, request: Request, clerk: ClerkSession) -> Response:
        token = request.cookies.get(self.session_cookie, "")
        await self.store.close_session(token)
        await self.actions.record(self.actor(clerk), "sign out", "web-logout")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(
            self.session_cookie, path="/", secure=self.secure_cookies, httponly=True
        )
        return response
