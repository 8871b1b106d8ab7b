"""The clerks' pages: sign-in, dashboard, councillors, sessions, receipts, relay, audit, queue.

Server-rendered (jinja2, ``templates/web/clerk/``); every flow works with plain HTML forms, and
``/static/clerk.js`` adds drag-and-drop uploads and the live receipts matrix. Each page handler
goes through ``ClerkSite.page`` (signed-in clerk required; a POST must carry the session's CSRF
token) and does its work through :class:`~mailsvc.web.actions.ClerkActions`, which records it in
the audit log. Form field names and button labels are listed in ``mailsvc/web/README.md``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from mailsvc import templating
from mailsvc.config import Settings
from mailsvc.domain.receipt_states import EventKind, ReceiptMatrix, summary
from mailsvc.domain.vocabulary import (
    DISTRIBUTION_KINDS,
    DOCUMENT_KINDS,
    SESSION_KINDS,
    STATE_ORDER,
    state_label,
)
from mailsvc.storage.clerks import ClerkSession, WebStore
from mailsvc.storage.db import utcnow
from mailsvc.web.actions import ActionError, Actor, ClerkActions, DistributionRequest
from mailsvc.web.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LANGUAGE_COOKIE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    ClerkAuth,
    LoginLimiter,
    LoginResult,
    csrf_ok,
)

log = logging.getLogger(__name__)

LANGUAGES = ("pl", "en")
STATIC_DIR = templating.TEMPLATES_DIR / "web" / "static"
_CLERK_CSP = (
    "default-src 'self'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
    "img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# The printable credentials letter carries its own <style>; it runs no script.
_LETTER_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
LETTERS_VALID = timedelta(minutes=30)
MAX_FILES = 50

_RANK = {kind: i for i, kind in enumerate(STATE_ORDER)}

Handler = Callable[[Request, ClerkSession], Awaitable[Response]]


@dataclass
class Letters:
    """Credentials letters kept briefly in memory for the clerk who created them.

    Passwords are never stored; the letter is there to be printed right after the import or
    reset, and gone after ``LETTERS_VALID`` or a restart.
    """

    items: dict[str, tuple[int, str, float]] = field(default_factory=dict)

    def keep(self, session_id: int, html: str) -> str:
        now = time.monotonic()
        for key, (_, _, expires) in list(self.items.items()):
            if expires < now:
                del self.items[key]
        key = secrets.token_urlsafe(18)
        self.items[key] = (session_id, html, now + LETTERS_VALID.total_seconds())
        return key

    def get(self, key: str, session_id: int) -> str | None:
        found = self.items.get(key)
        if found is None or found[0] != session_id or found[2] < time.monotonic():
            return None
        return found[1]


class ClerkPages:
    """Renders ``templates/web/clerk/<name>.html.j2`` (both languages in one file)."""

    def __init__(self, settings: Settings, templates_dir: Path | None = None) -> None:
        self.settings = settings
        self.env = templating.environment(templates_dir or templating.TEMPLATES_DIR)
        self.default_language = settings.language if settings.language in LANGUAGES else "pl"

    def language(self, request: Request) -> str:
        for candidate in (request.query_params.get("lang"), request.cookies.get(LANGUAGE_COOKIE)):
            if candidate in LANGUAGES:
                return candidate
        return self.default_language

    def render(
        self,
        request: Request,
        name: str,
        clerk: ClerkSession | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        lang = self.language(request)
        nonce = secrets.token_urlsafe(18)
        csrf = clerk.csrf if clerk else context.pop("login_csrf", "")

        def tr(pl: str, en: str) -> str:
            return en if lang == "en" else pl

        other = "en" if lang == "pl" else "pl"
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
            headers={"content-security-policy": _CLERK_CSP.format(nonce=nonce)},
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


def _local_input(value: str, field_name: str, pl: bool) -> datetime | None:
    """A ``datetime-local`` field ("2026-05-14T16:00") or None when empty."""
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace(" ", "T")).replace(tzinfo=None)
    except ValueError:
        raise ActionError(
            f"Pole „{field_name}”: podaj datę i godzinę, np. 2026-05-14 16:00."
            if pl
            else f"Field “{field_name}”: give a date and time, e.g. 2026-05-14 16:00."
        ) from None


def _safe_next(target: str | None) -> str:
    """Only local paths: a login link must not send the clerk elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/"
    return target


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while block := await upload.read(1024 * 1024):
        yield block


def _form_text(form: FormData, name: str, limit: int = 10_000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


class ClerkSite:
    """The routes of the clerks' interface and what they share."""

    def __init__(
        self,
        *,
        settings: Settings,
        actions: ClerkActions,
        auth: ClerkAuth,
        store: WebStore,
        pages: ClerkPages,
        limiter: LoginLimiter,
        secure_cookies: bool,
    ) -> None:
        self.settings = settings
        self.actions = actions
        self.auth = auth
        self.store = store
        self.pages = pages
        self.limiter = limiter
        self.secure = secure_cookies
        self.idle = timedelta(minutes=settings.web.session_minutes)
        self.letters = Letters()

    @property
    def pl(self) -> bool:
        return self.settings.language != "en"

    def routes(self) -> Sequence[BaseRoute]:
        p = self.page
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", p(self.logout), methods=["POST"]),
            Route("/", p(self.dashboard), methods=["GET"]),
            Route("/councillors", p(self.councillors), methods=["GET"]),
            Route("/councillors/import", p(self.import_form), methods=["GET"]),
            Route("/councillors/import", p(self.import_preview), methods=["POST"]),
            Route("/councillors/import/apply", p(self.import_apply), methods=["POST"]),
            Route("/councillors/letters/{key}", p(self.letter), methods=["GET"]),
            Route(
                "/councillors/{address}/reset-password", p(self.reset_password), methods=["POST"]
            ),
            Route("/councillors/{address}/end-mandate", p(self.end_mandate), methods=["POST"]),
            Route("/sessions", p(self.sessions), methods=["GET"]),
            Route("/sessions", p(self.create_session), methods=["POST"]),
            Route("/sessions/{id:int}", p(self.session), methods=["GET"]),
            Route("/sessions/{id:int}/agenda", p(self.add_agenda_item), methods=["POST"]),
            Route("/sessions/{id:int}/documents", p(self.upload), methods=["POST"]),
            Route("/sessions/{id:int}/distributions/check", p(self.check_notice), methods=["POST"]),
            Route("/sessions/{id:int}/distributions", p(self.schedule), methods=["POST"]),
            Route("/distributions/{id:int}/cancel", p(self.cancel), methods=["POST"]),
            Route("/sessions/{id:int}/receipts", p(self.receipts), methods=["GET"]),
            Route("/sessions/{id:int}/receipts.json", p(self.receipts_json), methods=["GET"]),
            Route("/sessions/{id:int}/receipts.csv", p(self.receipts_csv), methods=["GET"]),
            Route("/sessions/{id:int}/receipts.pdf", p(self.receipts_pdf), methods=["GET"]),
            Route("/relay", p(self.relay), methods=["GET"]),
            Route("/audit", p(self.audit), methods=["GET"]),
            Route("/queue", p(self.queue), methods=["GET"]),
            Route("/queue/retry", p(self.retry), methods=["POST"]),
            Route("/static/clerk.js", self.script, methods=["GET"]),
        ]

    # --- the gate every page passes -----------------------------------------------------------

    async def current(self, request: Request) -> ClerkSession | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token or len(token) > 200:
            return None
        return await self.store.session(token, self.idle)

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
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
                    self._t(
                        "Sesja wygasła lub nie jesteś zalogowany. Zaloguj się ponownie.",
                        "Your session has expired or you are not signed in. Sign in again.",
                    ),
                )
            if request.method == "POST":
                try:
                    form = await request.form(max_files=MAX_FILES, max_fields=500)
                except Exception:  # starlette raises HTTPException(400) on a malformed body
                    return self.pages.problem(
                        request, clerk, self._t("Nieprawidłowy formularz.", "Malformed form."), 400
                    )
                given = form.get(CSRF_FIELD)
                token = given if isinstance(given, str) else request.headers.get(CSRF_HEADER)
                if not csrf_ok(clerk.csrf, token):
                    return self.pages.problem(
                        request,
                        clerk,
                        self._t(
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
            finally:
                if request.method == "POST":
                    await (await request.form()).close()  # uploads' temporary files

        return endpoint

    def _t(self, pl: str, en: str) -> str:
        return pl if self.pl else en

    def _actor(self, clerk: ClerkSession) -> Actor:
        return Actor(clerk.actor, "web")

    # --- sign-in and sign-out -----------------------------------------------------------------

    def _login_context(self, request: Request, message: str = "") -> dict[str, Any]:
        return {"message": message, "next": _safe_next(request.query_params.get("next"))}

    def _login_page(self, request: Request, status: int = 200, message: str = "") -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or self.auth.new_login_nonce()
        context = self._login_context(request, message)
        context["next"] = _safe_next(request.query_params.get("next") or context["next"])
        response = self.pages.render(
            request, "login", None, status, login_csrf=self.auth.login_csrf(nonce), **context
        )
        response.set_cookie(
            LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=self.secure, path="/login"
        )
        return response

    async def login_form(self, request: Request) -> Response:
        if await self.current(request) is not None:
            return RedirectResponse("/", 303)
        return self._login_page(request)

    async def login(self, request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=20)
        if not self.auth.login_csrf_ok(
            request.cookies.get(LOGIN_COOKIE), _form_text(form, CSRF_FIELD, 200)
        ):
            return self._login_page(
                request,
                403,
                self._t(
                    "Formularz logowania wygasł lub nie pochodzi z tej strony (CSRF). "
                    "Spróbuj ponownie.",
                    "The sign-in form has expired or did not come from this site (CSRF). "
                    "Try again.",
                ),
            )
        login = _form_text(form, "username", 254)
        password = _form_text(form, "password", 1025)
        address = self.auth.address(login)
        client = request.client.host if request.client else "unknown"
        keys = (f"ip:{client}", f"user:{address}")
        wait = self.limiter.blocked(*keys)
        if wait > 0:
            minutes = max(1, int(wait // 60) + 1)
            response = self._login_page(
                request,
                429,
                self._t(
                    f"Zbyt wiele nieudanych prób logowania. Spróbuj ponownie za {minutes} min.",
                    f"Too many failed sign-in attempts. Try again in {minutes} min.",
                ),
            )
            response.headers["retry-after"] = str(int(wait) + 1)
            return response
        outcome = await self.auth.login(login, password)
        actor = Actor(f"{outcome.name} <{outcome.address}>" if outcome.name else address, "web")
        if outcome.result is LoginResult.UNAVAILABLE:
            return self._login_page(
                request,
                503,
                self._t(
                    "Katalog użytkowników jest chwilowo niedostępny. Spróbuj za chwilę.",
                    "The user directory is unavailable at the moment. Try again shortly.",
                ),
            )
        if outcome.result is not LoginResult.OK:
            self.limiter.failed(*keys)
            await self.actions.record(
                actor, "sign in", "web-login-refused", reason=outcome.result.value, ip=client
            )
            if outcome.result is LoginResult.NOT_A_CLERK:
                return self._login_page(
                    request,
                    403,
                    self._t(
                        "To konto nie ma dostępu do panelu biura rady (brak w grupie urzędników).",
                        "This account has no access to the council office panel (not in the "
                        "clerks group).",
                    ),
                )
            return self._login_page(
                request,
                401,
                self._t("Nieprawidłowy login lub hasło.", "Wrong login or password."),
            )
        self.limiter.succeeded(keys[1])
        token, clerk = await self.store.open_session(outcome.address, outcome.name)
        await self.actions.record(Actor(clerk.actor, "web"), "sign in", "web-login", ip=client)
        response = RedirectResponse(_safe_next(_form_text(form, "next", 2000)), 303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=self.secure,
            path="/",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    async def logout(self, request: Request, clerk: ClerkSession) -> Response:
        token = request.cookies.get(SESSION_COOKIE, "")
        await self.store.close_session(token)
        await self.actions.record(self._actor(clerk), "sign out", "web-logout")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=self.secure, httponly=True)
        return response

    # --- dashboard ------------------------------------------------------------------------------

    async def dashboard(self, request: Request, clerk: ClerkSession) -> Response:
        service = self.actions.distributions
        now_local = service.to_local(utcnow())
        sessions = await self.actions.sessions()
        upcoming = [s for s in sessions if s.starts_at >= now_local - timedelta(hours=12)][:10]
        scheduled = await service.store.distributions(statuses=("scheduled", "sending"))
        numbers = {s.id: s for s in sessions}
        progress = []
        for session in upcoming[:5]:
            matrix = await service.matrix(session.number)
            if matrix.distributions:
                progress.append((session, _counts(matrix)))
        return self.pages.render(
            request,
            "dashboard",
            clerk,
            upcoming=upcoming,
            scheduled=[
                (d, numbers.get(d.session_id), service.to_local(d.due_at)) for d in scheduled
            ],
            progress=progress,
            refresh=self.settings.web.refresh_seconds,
        )

    # --- councillors ----------------------------------------------------------------------------

    async def councillors(self, request: Request, clerk: ClerkSession) -> Response:
        include_all = request.query_params.get("all") == "1"
        rows = await self.actions.councillors(include_all=include_all)
        return self.pages.render(
            request,
            "councillors",
            clerk,
            rows=rows,
            include_all=include_all,
            done=request.query_params.get("done", ""),
            today=date.today().isoformat(),
        )

    async def import_form(self, request: Request, clerk: ClerkSession) -> Response:
        return self.pages.render(request, "import", clerk, preview=None)

    async def import_preview(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        upload = form.get("roster")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise ActionError(self._t("Wybierz plik spisu (CSV).", "Choose a roster file (CSV)."))
        path = await self.actions.save_upload(_chunks(upload), ".csv")
        encoding = _form_text(form, "encoding", 32) or None
        try:
            preview = await self.actions.preview_import(path, encoding)
        except ActionError:
            path.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(self.actions.purge_uploads)
        return self.pages.render(
            request,
            "import",
            clerk,
            preview=preview,
            upload_id=path.stem,
            filename=upload.filename,
            encoding=encoding or "",
        )

    async def import_apply(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        path = self.actions.upload_path(_form_text(form, "upload_id", 64))
        encoding = _form_text(form, "encoding", 32) or None
        preview, result = await self.actions.apply_import(
            path,
            self._actor(clerk),
            encoding=encoding,
            skip_invalid=form.get("skip_invalid") == "1",
            expected_digest=_form_text(form, "plan_digest", 64),
        )
        path.unlink(missing_ok=True)
        letters = None
        if result.created:
            letters = self._keep_letters(clerk, result.created)
        return self.pages.render(
            request, "import_done", clerk, result=result, letters=letters, preview=preview
        )

    def _keep_letters(self, clerk: ClerkSession, accounts: Sequence[Any]) -> str:
        from mailsvc.compose import CouncillorCredentials, credentials_letters

        html = credentials_letters(
            self.settings,
            [
                CouncillorCredentials(a.display_name, a.address, a.password, a.district or None)
                for a in accounts
            ],
        )
        return self.letters.keep(clerk.id, html)

    async def letter(self, request: Request, clerk: ClerkSession) -> Response:
        html = self.letters.get(request.path_params["key"], clerk.id)
        if html is None:
            raise ActionError(
                self._t(
                    "Listy z hasłami są dostępne tylko przez 30 minut po utworzeniu kont. "
                    "Zresetuj hasło, aby wydrukować nowy list.",
                    "Credentials letters are kept for 30 minutes after the accounts were made. "
                    "Reset the password to print a new letter.",
                ),
                410,
            )
        return HTMLResponse(html, headers={"content-security-policy": _LETTER_CSP})

    async def reset_password(self, request: Request, clerk: ClerkSession) -> Response:
        account = await self.actions.reset_password(
            request.path_params["address"], self._actor(clerk)
        )
        letters = self._keep_letters(clerk, [account])
        return self.pages.render(request, "password", clerk, account=account, letters=letters)

    async def end_mandate(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        raw = _form_text(form, "on", 32)
        try:
            on = date.fromisoformat(raw)
        except ValueError:
            raise ActionError(
                self._t(
                    f"Data końca mandatu „{raw}”: podaj datę RRRR-MM-DD.",
                    f"End of mandate “{raw}”: give a date as YYYY-MM-DD.",
                )
            ) from None
        await self.actions.end_mandate(
            request.path_params["address"], on, _form_text(form, "reason", 500), self._actor(clerk)
        )
        return RedirectResponse("/councillors?done=mandate", 303)

    # --- sessions -------------------------------------------------------------------------------

    async def sessions(self, request: Request, clerk: ClerkSession) -> Response:
        return self.pages.render(
            request,
            "sessions",
            clerk,
            sessions=await self.actions.sessions(),
            kinds=SESSION_KINDS,
            form={},
        )

    async def create_session(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        starts_at = _local_input(_form_text(form, "starts_at", 40), "starts_at", self.pl)
        if starts_at is None:
            raise ActionError(self._t("Podaj termin sesji.", "Give the session's date and time."))
        agenda = [line for line in _form_text(form, "agenda", 50_000).splitlines() if line.strip()]
        row = await self.actions.create_session(
            self._actor(clerk),
            number=_form_text(form, "number", 64),
            kind=_form_text(form, "kind", 32) or "ordinary",
            starts_at=starts_at,
            place=_form_text(form, "place", 500),
            title=_form_text(form, "title", 500),
            agenda=agenda,
        )
        return RedirectResponse(f"/sessions/{row.id}?done=created", 303)

    async def _session_page(
        self,
        request: Request,
        clerk: ClerkSession,
        session_id: int,
        status: int = 200,
        **context: Any,
    ) -> Response:
        detail = await self.actions.session_detail(session_id)
        service = self.actions.distributions
        context.setdefault("uploaded", [])
        context.setdefault("refused", [])
        return self.pages.render(
            request,
            "session",
            clerk,
            status,
            detail=detail,
            to_local=service.to_local,
            doc_kinds=DOCUMENT_KINDS,
            distribution_kinds=DISTRIBUTION_KINDS,
            committees=self.settings.committee_names,
            done=request.query_params.get("done", ""),
            **context,
        )

    async def session(self, request: Request, clerk: ClerkSession) -> Response:
        return await self._session_page(request, clerk, request.path_params["id"])

    async def add_agenda_item(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        session_id = request.path_params["id"]
        await self.actions.add_agenda_item(
            session_id, _form_text(form, "title", 1000), self._actor(clerk)
        )
        return RedirectResponse(f"/sessions/{session_id}?done=agenda", 303)

    async def upload(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        session_id = request.path_params["id"]
        await self.actions.session_row(session_id)
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
        if not files:
            raise ActionError(
                self._t("Wybierz co najmniej jeden plik.", "Choose at least one file.")
            )
        doc_kind = _form_text(form, "doc_kind", 32) or "other"
        item_text = _form_text(form, "agenda_item", 10).strip()
        agenda_item = int(item_text) if item_text.isdigit() else None
        uploaded, refused = [], []
        for upload in files:
            name = upload.filename or "document"
            try:
                path = await self.actions.save_upload(_chunks(upload))
                try:
                    doc = await self.actions.attach(
                        session_id,
                        path,
                        name,
                        self._actor(clerk),
                        doc_kind=doc_kind,
                        agenda_item=agenda_item,
                    )
                finally:
                    path.unlink(missing_ok=True)
            except ActionError as exc:
                refused.append((name, exc.message))
                continue
            uploaded.append(doc)
        status = 422 if refused else 200
        return await self._session_page(
            request, clerk, session_id, status, uploaded=uploaded, refused=refused
        )

    def _distribution_request(self, form: FormData) -> DistributionRequest:
        kind = _form_text(form, "kind", 32) or "notice"
        documents: tuple[int, ...] | None = None
        chosen = [v for v in form.getlist("documents") if isinstance(v, str) and v.isdigit()]
        if chosen:
            documents = tuple(int(v) for v in chosen)
        committee = _form_text(form, "committee", 64) or None
        return DistributionRequest(
            kind=kind,
            at=_local_input(_form_text(form, "at", 40), "at", self.pl),
            note=_form_text(form, "note", 5000),
            new_date=_local_input(_form_text(form, "new_date", 40), "new_date", self.pl),
            documents=documents,
            committee=committee,
        )

    async def check_notice(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        session_id = request.path_params["id"]
        wanted = self._distribution_request(form)
        check = await self.actions.notice_check(session_id, wanted)
        return self.pages.render(
            request,
            "confirm",
            clerk,
            session=await self.actions.session_row(session_id),
            wanted=wanted,
            check=check,
            fields=_echo_fields(form),
            message="",
        )

    async def schedule(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        session_id = request.path_params["id"]
        wanted = self._distribution_request(form)
        override = _form_text(form, "override_reason", 1000)
        try:
            dist = await self.actions.schedule(
                session_id, wanted, self._actor(clerk), override_reason=override or None
            )
        except ActionError as exc:
            if exc.status != 409:
                raise
            check = await self.actions.notice_check(session_id, wanted)
            return self.pages.render(
                request,
                "confirm",
                clerk,
                409,
                session=await self.actions.session_row(session_id),
                wanted=wanted,
                check=check,
                fields=_echo_fields(form),
                message=exc.message,
            )
        return RedirectResponse(f"/sessions/{session_id}?done=scheduled-{dist.id}", 303)

    async def cancel(self, request: Request, clerk: ClerkSession) -> Response:
        dist = await self.actions.cancel_distribution(request.path_params["id"], self._actor(clerk))
        return RedirectResponse(f"/sessions/{dist.session_id}?done=cancelled", 303)

    # --- receipts -------------------------------------------------------------------------------

    async def receipts(self, request: Request, clerk: ClerkSession) -> Response:
        session_id = request.path_params["id"]
        matrix = await self.actions.matrix(session_id)
        lang = self.pages.language(request)
        return self.pages.render(
            request,
            "receipts",
            clerk,
            session_id=session_id,
            matrix=matrix,
            grid=document_grid(matrix, lang),
            counts=_counts(matrix),
            refresh=self.settings.web.refresh_seconds,
            to_local=self.actions.distributions.to_local,
        )

    async def receipts_json(self, request: Request, clerk: ClerkSession) -> Response:
        matrix = await self.actions.matrix(request.path_params["id"])
        lang = self.pages.language(request)
        grid = document_grid(matrix, lang)
        return JSONResponse(
            {
                "generated_at": matrix.generated_at.isoformat() + "Z",
                "rows": [
                    {
                        "address": row["address"],
                        "cells": {c["sha256"]: [c["state"], c["label"]] for c in row["cells"]},
                    }
                    for row in grid["rows"]
                ],
                "counts": {k.value: v for k, v in _counts(matrix).items()},
                "labels": {k.value: state_label(k, lang) for k in STATE_ORDER},
            }
        )

    async def receipts_csv(self, request: Request, clerk: ClerkSession) -> Response:
        from mailsvc.receipts.report import render_csv

        matrix = await self.actions.matrix(request.path_params["id"])
        return Response(
            render_csv(matrix),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": _report_name(matrix, "csv")},
        )

    async def receipts_pdf(self, request: Request, clerk: ClerkSession) -> Response:
        from mailsvc.receipts.report import render_pdf

        matrix = await self.actions.matrix(request.path_params["id"])
        pdf = await asyncio.to_thread(render_pdf, matrix)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"content-disposition": _report_name(matrix, "pdf")},
        )

    # --- relay, audit, queue --------------------------------------------------------------------

    async def relay(self, request: Request, clerk: ClerkSession) -> Response:
        raw = request.query_params.get("since", "")
        since = None
        if raw:
            try:
                since = date.fromisoformat(raw)
            except ValueError:
                raise ActionError(
                    self._t("Podaj datę jako RRRR-MM-DD.", "Give the date as YYYY-MM-DD.")
                ) from None
        stats = await self.actions.relay_stats(since)
        return self.pages.render(request, "relay", clerk, stats=stats, since=raw)

    async def audit(self, request: Request, clerk: ClerkSession) -> Response:
        page_size = 100
        raw = request.query_params.get("page", "1")
        page = max(1, int(raw)) if raw.isdigit() else 1
        actor = request.query_params.get("actor", "")[:200]
        entries, total = await self.actions.audit_entries(
            limit=page_size, offset=(page - 1) * page_size, actor=actor or None
        )
        return self.pages.render(
            request,
            "audit",
            clerk,
            entries=entries,
            total=total,
            page=page,
            pages=max(1, -(-total // page_size)),
            actor=actor,
            to_local=self.actions.distributions.to_local,
        )

    async def queue(self, request: Request, clerk: ClerkSession) -> Response:
        show = request.query_params.get("show", "problems")
        statuses = None if show == "all" else ("deferred", "dead")
        rows = await self.actions.deliveries(statuses)
        return self.pages.render(
            request,
            "queue",
            clerk,
            rows=rows[-500:],
            show=show,
            done=request.query_params.get("done", ""),
            to_local=self.actions.distributions.to_local,
        )

    async def retry(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        done = await self.actions.retry(
            self._actor(clerk),
            queue_id=_form_text(form, "queue_id", 64) or None,
            dead=form.get("all_dead") == "1",
        )
        return RedirectResponse(f"/queue?done={len(done)}", 303)

    async def script(self, request: Request) -> Response:
        path = STATIC_DIR / "clerk.js"
        body = await asyncio.to_thread(path.read_bytes)
        return Response(
            body,
            media_type="text/javascript; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )


def _echo_fields(form: FormData) -> list[tuple[str, str]]:
    """The distribution form's fields, repeated as hidden inputs on the confirmation page."""
    names = ("kind", "at", "note", "new_date", "documents", "committee")
    out = []
    for name in names:
        for value in form.getlist(name):
            if isinstance(value, str):
                out.append((name, value))
    return out


def _counts(matrix: ReceiptMatrix) -> dict[EventKind, int]:
    counts = summary(matrix.rows)
    return {k: counts[k] for k in STATE_ORDER if counts.get(k)}


def _report_name(matrix: ReceiptMatrix, ext: str) -> str:
    from mailsvc.web.app import content_disposition

    number = matrix.session_number.replace("/", "-")
    return content_disposition(f"potwierdzenia-{number}.{ext}")


def document_grid(matrix: ReceiptMatrix, language: str) -> dict[str, Any]:
    """Councillor x document: each document's state for a councillor is the furthest state of
    the distributions that carried it to them (a failure shows only if nothing got through)."""
    carried: dict[str, set[int]] = {}
    for dist in matrix.distributions:
        for sha in dist.documents:
            carried.setdefault(sha, set()).add(dist.id)
    columns = [d for d in matrix.documents if d.sha256 in carried]
    # Distributions without documents (cancellation, date change) still get a column.
    bare = [d for d in matrix.distributions if not d.documents]
    rows = []
    for row in matrix.rows:
        by_dist = {c.distribution_id: c.state.state for c in row.cells}
        cells = []
        for document in columns:
            states = [by_dist[i] for i in carried[document.sha256] if i in by_dist]
            state = max(states, key=lambda s: _RANK.get(s, 0)) if states else None
            cells.append(_cell(document.sha256, state, language))
        for dist in bare:
            cells.append(_cell(f"d{dist.id}", by_dist.get(dist.id), language))
        rows.append({"name": row.name, "address": row.address, "cells": cells})
    return {"documents": columns, "bare": bare, "rows": rows}


def _cell(key: str, state: EventKind | None, language: str) -> dict[str, str]:
    if state is None:
        return {"sha256": key, "state": "none", "label": "—"}
    return {"sha256": key, "state": state.value, "label": state_label(state, language)}
