"""The JSON API (``/api/v1``): the clerks' actions for automation, with bearer tokens.

Tokens are made with ``mailsvc web token create --name NAME`` (only their hashes are stored) and
sent as ``Authorization: Bearer msv_…``; every action is recorded in the audit log as
``api:NAME``. The API takes no cookies, so cross-site requests cannot use a clerk's session and
no CSRF token is needed. ``/api/openapi.json`` describes every operation (OpenAPI 3.1).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailsvc.directory.councillors import CreatedAccount
from mailsvc.storage.clerks import ApiToken, WebStore
from mailsvc.storage.register import RegisterRow
from mailsvc.storage.sessions import CouncilSessionRow, DistributionRow, DocumentRow
from mailsvc.web.actions import ActionError, Actor, ClerkActions, DistributionRequest
from mailsvc.web.http import upload_blocks
from mailsvc.web.openapi import openapi_document

ApiHandler = Callable[[Request, Actor], Awaitable[Any]]
_MAX_JSON = 1024 * 1024


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def councillor_json(r: RegisterRow) -> dict[str, Any]:
    return {
        "address": r.address,
        "name": r.display_name,
        "district": r.district,
        "club": r.club,
        "role": r.role,
        "committees": list(r.committees),
        "status": r.status,
        "term_start": _iso(r.term_start),
        "mandate_end": _iso(r.mandate_end),
    }


def session_json(s: CouncilSessionRow) -> dict[str, Any]:
    return {
        "id": s.id,
        "number": s.number,
        "kind": s.kind,
        "starts_at": s.starts_at.isoformat(),
        "place": s.place,
        "title": s.title,
        "status": s.status,
    }


def document_json(d: DocumentRow) -> dict[str, Any]:
    return {
        "id": d.id,
        "filename": d.filename,
        "media_type": d.media_type,
        "doc_kind": d.doc_kind,
        "size": d.size,
        "pages": d.pages,
        "sha256": d.sha256,
        "agenda_item_id": d.agenda_item_id,
        "replaced_by": d.replaced_by,
    }


def distribution_json(d: DistributionRow) -> dict[str, Any]:
    return {
        "id": d.id,
        "session_id": d.session_id,
        "kind": d.kind,
        "status": d.status,
        "due_at": d.due_at.isoformat() + "Z",
        "sent_at": d.sent_at.isoformat() + "Z" if d.sent_at else None,
        "documents": list(d.document_ids),
        "override_reason": d.override_reason,
        "late": d.late,
    }


def account_json(a: CreatedAccount) -> dict[str, Any]:
    return {"address": a.address, "password": a.password, "name": a.display_name}


def _error(message: str, status: int) -> JSONResponse:
    headers = {"www-authenticate": 'Bearer realm="mailsvc"'} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@dataclass
class JsonApi:
    actions: ClerkActions
    store: WebStore

    def routes(self) -> Sequence[BaseRoute]:
        read = self.api
        dist = functools.partial(self.api, scope="distributions")
        people = functools.partial(self.api, scope="councillors")
        return [
            Route("/api/openapi.json", self.openapi, methods=["GET"]),
            Route("/api/v1/councillors", read(self.councillors), methods=["GET"]),
            Route("/api/v1/councillors/import", people(self.import_roster), methods=["POST"]),
            Route(
                "/api/v1/councillors/{address}/reset-password",
                people(self.reset_password),
                methods=["POST"],
            ),
            Route(
                "/api/v1/councillors/{address}/end-mandate",
                people(self.end_mandate),
                methods=["POST"],
            ),
            Route("/api/v1/sessions", read(self.sessions), methods=["GET"]),
            Route("/api/v1/sessions", dist(self.create_session), methods=["POST"]),
            Route("/api/v1/sessions/{id:int}", read(self.session), methods=["GET"]),
            Route("/api/v1/sessions/{id:int}/agenda", dist(self.add_agenda_item), methods=["POST"]),
            Route("/api/v1/sessions/{id:int}/documents", dist(self.upload), methods=["POST"]),
            # A check that changes nothing: reading is enough.
            Route(
                "/api/v1/sessions/{id:int}/notice-check", read(self.notice_check), methods=["POST"]
            ),
            Route("/api/v1/sessions/{id:int}/distributions", dist(self.schedule), methods=["POST"]),
            Route("/api/v1/distributions/{id:int}/cancel", dist(self.cancel), methods=["POST"]),
            Route("/api/v1/sessions/{id:int}/receipts", read(self.receipts), methods=["GET"]),
            Route("/api/v1/relay/stats", read(self.relay_stats), methods=["GET"]),
            Route("/api/v1/audit", read(self.audit), methods=["GET"]),
            Route("/api/v1/queue", read(self.queue), methods=["GET"]),
            Route("/api/v1/queue/retry", dist(self.retry), methods=["POST"]),
        ]

    async def authenticate(self, request: Request) -> ApiToken | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or len(token) > 200:
            return None
        return await self.store.verify_token(token.strip())

    def api(
        self, handler: ApiHandler, scope: str = "read"
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` for tokens that hold ``scope`` (every token reads only if it has
        "read"; writing needs "distributions" or "councillors")."""

        async def endpoint(request: Request) -> Response:
            token = await self.authenticate(request)
            if token is None:
                return _error(
                    "missing, unknown, expired or revoked API token (Authorization: Bearer)", 401
                )
            if scope not in token.scopes:
                await request.close()
                return _error(
                    f"this API token lacks the scope {scope!r} (it has: {', '.join(token.scopes)})",
                    403,
                )
            try:
                result = await handler(request, Actor(token.actor, "api"))
            except ActionError as exc:
                return _error(exc.message, exc.status)
            finally:
                await request.close()  # uploads' temporary files
            if isinstance(result, Response):
                return result
            return JSONResponse(result)

        return endpoint

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > _MAX_JSON:
            raise ActionError("request body too large", 413)
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise ActionError("request body: expected a JSON object", 400) from None
        if not isinstance(data, dict):
            raise ActionError("request body: expected a JSON object", 400)
        return data

    @staticmethod
    def _datetime(data: dict[str, Any], key: str) -> datetime | None:
        value = data.get(key)
        if value in (None, ""):
            return None
        try:
            return datetime.fromisoformat(str(value)).replace(tzinfo=None)
        except ValueError:
            raise ActionError(f"{key}: expected local time as YYYY-MM-DDTHH:MM") from None

    # --- councillors ------------------------------------------------------------------------

    async def councillors(self, request: Request, actor: Actor) -> Any:
        rows = await self.actions.councillors(request.query_params.get("all") == "true")
        return [councillor_json(r) for r in rows]

    async def import_roster(self, request: Request, actor: Actor) -> Any:
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("roster")
        if not isinstance(upload, UploadFile):
            raise ActionError("multipart field 'roster' (the CSV file) is required", 400)

        path = await self.actions.save_upload(upload_blocks(upload), ".csv")
        try:
            encoding = request.query_params.get("encoding") or None
            if request.query_params.get("dry_run") == "true":
                preview = await self.actions.preview_import(path, encoding)
                plan = preview.plan
                return {
                    "dry_run": True,
                    "digest": preview.digest,
                    "create": [
                        {
                            "line": c.entry.line,
                            "name": c.entry.full_name,
                            "address": preview.addresses.get(c.entry.line),
                        }
                        for c in plan.creates
                    ],
                    "update": [u.existing.address for u in plan.updates],
                    "disable": [d.existing.address for d in plan.disables],
                    "unchanged": len(plan.unchanged),
                    "problems": preview.problems,
                }
            _, result = await self.actions.apply_import(
                path,
                actor,
                encoding=encoding,
                skip_invalid=request.query_params.get("skip_invalid") == "true",
                expected_digest=request.query_params.get("digest") or None,
            )
            return {"dry_run": False, **result.as_json()}
        finally:
            path.unlink(missing_ok=True)

    async def reset_password(self, request: Request, actor: Actor) -> Any:
        return account_json(
            await self.actions.reset_password(request.path_params["address"], actor)
        )

    async def end_mandate(self, request: Request, actor: Actor) -> Any:
        data = await self._body(request)
        try:
            on = date.fromisoformat(str(data.get("on", "")))
        except ValueError:
            raise ActionError("on: expected a date as YYYY-MM-DD") from None
        now = await self.actions.end_mandate(
            request.path_params["address"], on, str(data.get("reason", "")), actor
        )
        return {"address": request.path_params["address"], "on": on.isoformat(), "disabled": now}

    # --- sessions ---------------------------------------------------------------------------

    async def sessions(self, request: Request, actor: Actor) -> Any:
        return [session_json(s) for s in await self.actions.sessions()]

    async def create_session(self, request: Request, actor: Actor) -> Any:
        data = await self._body(request)
        starts_at = self._datetime(data, "starts_at")
        if starts_at is None:
            raise ActionError("starts_at is required")
        agenda = data.get("agenda") or []
        if not isinstance(agenda, list):
            raise ActionError("agenda: expected a list of strings")
        row = await self.actions.create_session(
            actor,
            number=str(data.get("number", "")),
            kind=str(data.get("kind", "ordinary")),
            starts_at=starts_at,
            place=str(data.get("place", "")),
            title=str(data.get("title", "")),
            agenda=[str(a) for a in agenda],
        )
        return JSONResponse(session_json(row), status_code=201)

    async def session(self, request: Request, actor: Actor) -> Any:
        detail = await self.actions.session_detail(request.path_params["id"])
        return {
            **session_json(detail.session),
            "agenda": [{"position": i.position, "title": i.title} for i in detail.agenda],
            "documents": [document_json(d) for d in detail.documents],
            "distributions": [distribution_json(d) for d in detail.distributions],
        }

    async def add_agenda_item(self, request: Request, actor: Actor) -> Any:
        data = await self._body(request)
        item = await self.actions.add_agenda_item(
            request.path_params["id"], str(data.get("title", "")), actor
        )
        return JSONResponse({"position": item.position, "title": item.title}, status_code=201)

    async def upload(self, request: Request, actor: Actor) -> Any:
        session_id = request.path_params["id"]
        await self.actions.session_row(session_id)
        form = await request.form(max_files=50, max_fields=20)
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not files:
            raise ActionError("multipart field 'files' (one or more files) is required")
        kind = form.get("doc_kind")
        item = form.get("agenda_item")
        attached, refused = await self.actions.attach_files(
            session_id,
            [(f.filename or "document", upload_blocks(f)) for f in files],
            actor,
            doc_kind=kind if isinstance(kind, str) and kind else "other",
            agenda_item=int(item) if isinstance(item, str) and item.isdigit() else None,
        )
        out = {
            "attached": [document_json(d) for d in attached],
            "refused": [{"filename": name, "error": error} for name, error in refused],
        }
        return JSONResponse(out, status_code=422 if refused else 201)

    def _request(self, data: dict[str, Any]) -> DistributionRequest:
        documents = data.get("documents")
        if documents is not None and (
            not isinstance(documents, list) or not all(isinstance(i, int) for i in documents)
        ):
            raise ActionError("documents: expected a list of document ids")
        return DistributionRequest(
            kind=str(data.get("kind", "notice")),
            at=self._datetime(data, "at"),
            note=str(data.get("note", "")),
            new_date=self._datetime(data, "new_date"),
            documents=tuple(documents) if documents else None,
            committee=str(data["committee"]) if data.get("committee") else None,
        )

    async def notice_check(self, request: Request, actor: Actor) -> Any:
        check = await self.actions.notice_check(
            request.path_params["id"], self._request(await self._body(request))
        )
        return {
            "ok": check.ok,
            "applies": check.applies,
            "message": check.message,
            "deliver_on": check.deliver_on.isoformat(),
            "documents": [d.id for d in check.documents],
        }

    async def schedule(self, request: Request, actor: Actor) -> Any:
        data = await self._body(request)
        dist = await self.actions.schedule(
            request.path_params["id"],
            self._request(data),
            actor,
            override_reason=str(data["override_reason"]) if data.get("override_reason") else None,
        )
        return JSONResponse(distribution_json(dist), status_code=201)

    async def cancel(self, request: Request, actor: Actor) -> Any:
        return distribution_json(
            await self.actions.cancel_distribution(request.path_params["id"], actor)
        )

    async def receipts(self, request: Request, actor: Actor) -> Any:
        from mailsvc.receipts.report import render_json

        return render_json(await self.actions.matrix(request.path_params["id"]))

    # --- relay, audit, queue ----------------------------------------------------------------

    async def relay_stats(self, request: Request, actor: Actor) -> Any:
        raw = request.query_params.get("since")
        try:
            since = date.fromisoformat(raw) if raw else None
        except ValueError:
            raise ActionError("since: expected YYYY-MM-DD") from None
        return [
            {
                "recipient": s.recipient,
                "received": s.received,
                "replied": s.replied,
                "median_reply_seconds": s.median_reply_seconds,
            }
            for s in await self.actions.relay_stats(since)
        ]

    async def audit(self, request: Request, actor: Actor) -> Any:
        limit = min(1000, int(request.query_params.get("limit", "100") or 100))
        offset = int(request.query_params.get("offset", "0") or 0)
        entries, total = await self.actions.audit_entries(
            limit=max(1, limit), offset=max(0, offset), actor=request.query_params.get("actor")
        )
        return {
            "total": total,
            "entries": [
                {
                    "at": e.at.isoformat() + "Z",
                    "actor": e.actor,
                    "command": e.command,
                    "address": e.address,
                    "action": e.action,
                    "before": e.before,
                    "after": e.after,
                }
                for e in entries
            ],
        }

    async def queue(self, request: Request, actor: Actor) -> Any:
        statuses = [s for s in request.query_params.get("status", "").split(",") if s]
        return [
            {
                "queue_id": r.queue_id,
                "recipient": r.recipient,
                "status": r.status,
                "attempts": r.attempts,
                "next_attempt_at": r.next_attempt_at.isoformat() + "Z",
                "last_reply": r.last_reply,
                "route": r.route,
            }
            for r in await self.actions.deliveries(statuses or None)
        ]

    async def retry(self, request: Request, actor: Actor) -> Any:
        data = await self._body(request)
        done = await self.actions.retry(
            actor, queue_id=data.get("queue_id") or None, dead=bool(data.get("all_dead"))
        )
        return [
            {"queue_id": r.queue_id, "recipient": r.recipient, "previous_status": r.previous_status}
            for r in done
        ]

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())
