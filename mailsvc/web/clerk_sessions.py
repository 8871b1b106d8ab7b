"""The dashboard and the council sessions' pages: sessions and their agenda, documents
(uploaded and checked by content), and distributions (notice check, confirmation, scheduling,
cancelling)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailsvc.domain.vocabulary import DISTRIBUTION_KINDS, DOCUMENT_KINDS, SESSION_KINDS
from mailsvc.storage.clerks import ClerkSession
from mailsvc.storage.db import utcnow
from mailsvc.web.actions import ActionError, DistributionRequest
from mailsvc.web.clerk_receipts import state_counts
from mailsvc.web.forms import echo_fields, form_text, local_input
from mailsvc.web.http import upload_blocks
from mailsvc.web.pages import ClerkArea


class SessionPages(ClerkArea):
    """``/``, ``/sessions``, ``/sessions/{id}`` with its forms, ``/distributions/{id}/cancel``."""

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
                progress.append((session, state_counts(matrix)))
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
        starts_at = local_input(form_text(form, "starts_at", 40), "starts_at", self.language)
        if starts_at is None:
            raise ActionError(self.t("Podaj termin sesji.", "Give the session's date and time."))
        agenda = [line for line in form_text(form, "agenda", 50_000).splitlines() if line.strip()]
        row = await self.actions.create_session(
            self.actor(clerk),
            number=form_text(form, "number", 64),
            kind=form_text(form, "kind", 32) or "ordinary",
            starts_at=starts_at,
            place=form_text(form, "place", 500),
            title=form_text(form, "title", 500),
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
        context.setdefault("uploaded", [])
        context.setdefault("refused", [])
        return self.pages.render(
            request,
            "session",
            clerk,
            status,
            detail=detail,
            to_local=self.actions.distributions.to_local,
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
            session_id, form_text(form, "title", 1000), self.actor(clerk)
        )
        return RedirectResponse(f"/sessions/{session_id}?done=agenda", 303)

    async def upload(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        session_id = request.path_params["id"]
        await self.actions.session_row(session_id)
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
        if not files:
            raise ActionError(
                self.t("Wybierz co najmniej jeden plik.", "Choose at least one file.")
            )
        item_text = form_text(form, "agenda_item", 10).strip()
        uploaded, refused = await self.actions.attach_files(
            session_id,
            [(f.filename or "document", upload_blocks(f)) for f in files],
            self.actor(clerk),
            doc_kind=form_text(form, "doc_kind", 32) or "other",
            agenda_item=int(item_text) if item_text.isdigit() else None,
        )
        status = 422 if refused else 200
        return await self._session_page(
            request, clerk, session_id, status, uploaded=uploaded, refused=refused
        )

    # --- distributions --------------------------------------------------------------------------

    def _distribution_request(self, form: FormData) -> DistributionRequest:
        kind = form_text(form, "kind", 32) or "notice"
        documents: tuple[int, ...] | None = None
        chosen = [v for v in form.getlist("documents") if isinstance(v, str) and v.isdigit()]
        if chosen:
            documents = tuple(int(v) for v in chosen)
        committee = form_text(form, "committee", 64) or None
        return DistributionRequest(
            kind=kind,
            at=local_input(form_text(form, "at", 40), "at", self.language),
            note=form_text(form, "note", 5000),
            new_date=local_input(form_text(form, "new_date", 40), "new_date", self.language),
            documents=documents,
            committee=committee,
        )

    async def _confirm_page(
        self,
        request: Request,
        clerk: ClerkSession,
        wanted: DistributionRequest,
        status: int = 200,
        message: str = "",
    ) -> Response:
        """The notice rule's verdict and the form that confirms the distribution."""
        session_id = request.path_params["id"]
        check = await self.actions.notice_check(session_id, wanted)
        return self.pages.render(
            request,
            "confirm",
            clerk,
            status,
            session=await self.actions.session_row(session_id),
            wanted=wanted,
            check=check,
            fields=echo_fields(await request.form()),
            message=message,
        )

    async def check_notice(self, request: Request, clerk: ClerkSession) -> Response:
        wanted = self._distribution_request(await request.form())
        return await self._confirm_page(request, clerk, wanted)

    async def schedule(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        session_id = request.path_params["id"]
        wanted = self._distribution_request(form)
        override = form_text(form, "override_reason", 1000)
        try:
            dist = await self.actions.schedule(
                session_id, wanted, self.actor(clerk), override_reason=override or None
            )
        except ActionError as exc:
            if exc.status != 409:
                raise
            return await self._confirm_page(request, clerk, wanted, 409, exc.message)
        return RedirectResponse(f"/sessions/{session_id}?done=scheduled-{dist.id}", 303)

    async def cancel(self, request: Request, clerk: ClerkSession) -> Response:
        dist = await self.actions.cancel_distribution(request.path_params["id"], self.actor(clerk))
        return RedirectResponse(f"/sessions/{dist.session_id}?done=cancelled", 303)
