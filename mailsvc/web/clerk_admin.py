"""The office's look at the machinery: residents' mail per councillor (relay), the audit log,
and the delivery queue with its retry buttons."""

from __future__ import annotations

from datetime import date

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailsvc.storage.clerks import ClerkSession
from mailsvc.web.actions import ActionError
from mailsvc.web.forms import form_text
from mailsvc.web.pages import ClerkArea

AUDIT_PAGE_SIZE = 100
QUEUE_ROWS_SHOWN = 500


class AdminPages(ClerkArea):
    """``/relay``, ``/audit``, ``/queue`` and ``/queue/retry``."""

    async def relay(self, request: Request, clerk: ClerkSession) -> Response:
        raw = request.query_params.get("since", "")
        since = None
        if raw:
            try:
                since = date.fromisoformat(raw)
            except ValueError:
                raise ActionError(
                    self.t("Podaj datę jako RRRR-MM-DD.", "Give the date as YYYY-MM-DD.")
                ) from None
        stats = await self.actions.relay_stats(since)
        return self.pages.render(request, "relay", clerk, stats=stats, since=raw)

    async def audit(self, request: Request, clerk: ClerkSession) -> Response:
        raw = request.query_params.get("page", "1")
        page = max(1, int(raw)) if raw.isdigit() else 1
        actor = request.query_params.get("actor", "")[:200]
        entries, total = await self.actions.audit_entries(
            limit=AUDIT_PAGE_SIZE, offset=(page - 1) * AUDIT_PAGE_SIZE, actor=actor or None
        )
        return self.pages.render(
            request,
            "audit",
            clerk,
            entries=entries,
            total=total,
            page=page,
            pages=max(1, -(-total // AUDIT_PAGE_SIZE)),
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
            rows=rows[-QUEUE_ROWS_SHOWN:],
            show=show,
            done=request.query_params.get("done", ""),
            to_local=self.actions.distributions.to_local,
        )

    async def retry(self, request: Request, clerk: ClerkSession) -> Response:
        form = await request.form()
        done = await self.actions.retry(
            self.actor(clerk),
            queue_id=form_text(form, "queue_id", 64) or None,
            dead=form.get("all_dead") == "1",
        )
        return RedirectResponse(f"/queue?done={len(done)}", 303)
