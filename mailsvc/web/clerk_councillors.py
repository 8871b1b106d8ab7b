"""The councillors' pages: the list, the roster import (plan, then apply), password resets,
ends of mandates, and the printable credentials letters."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailsvc.directory.councillors import CreatedAccount
from mailsvc.storage.clerks import ClerkSession
from mailsvc.web.actions import ActionError
from mailsvc.web.forms import form_text
from mailsvc.web.http import upload_blocks
from mailsvc.web.pages import ClerkArea

LETTERS_VALID = timedelta(minutes=30)
# The printable credentials letter carries its own <style>; it runs no script.
_LETTER_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"


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


@dataclass
class CouncillorPages(ClerkArea):
    """``/councillors``, ``/councillors/import``, ``/councillors/letters/{key}``, and the
    password and mandate forms of each row."""

    letters: Letters = field(default_factory=Letters)

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
            raise ActionError(self.t("Wybierz plik spisu (CSV).", "Choose a roster file (CSV)."))
        path = await self.actions.save_upload(upload_blocks(upload), ".csv")
        encoding = form_text(form, "encoding", 32) or None
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
        path = self.actions.upload_path(form_text(form, "upload_id", 64))
        encoding = form_text(form, "encoding", 32) or None
        preview, result = await self.actions.apply_import(
            path,
            self.actor(clerk),
            encoding=encoding,
            skip_invalid=form.get("skip_invalid") == "1",
            expected_digest=form_text(form, "plan_digest", 64),
        )
        path.unlink(missing_ok=True)
        letters = None
        if result.created:
            letters = self._keep_letters(clerk, result.created)
        return self.pages.render(
            request, "import_done", clerk, result=result, letters=letters, preview=preview
        )

    def _keep_letters(self, clerk: ClerkSession, accounts: Sequence[CreatedAccount]) -> str:
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
                self.t(
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
            request.path_params["address"], self.actor(clerk)
        )
        letters = self._keep_letters(clerk, [account])
        return self.pages.render(request, "password", clerk, account=account, letters=letters)

    async def end_mandate(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        raw = form_text(form, "on", 32)
        try:
            on = date.fromisoformat(raw)
        except ValueError:
            raise ActionError(
                self.t(
                    f"Data końca mandatu „{raw}”: podaj datę RRRR-MM-DD.",
                    f"End of mandate “{raw}”: give a date as YYYY-MM-DD.",
                )
            ) from None
        await self.actions.end_mandate(
            request.path_params["address"], on, form_text(form, "reason", 500), self.actor(clerk)
        )
        return RedirectResponse("/councillors?done=mandate", 303)
