"""Assembles the clerks' interface and the JSON API over the use cases ``serve`` built.

Every URL of the clerks' pages is listed here, in one table (``_clerk_pages``); each page but
``/login`` and the script goes through the gate (``ClerkGate.page``). The handlers live by area
in the ``clerk_*`` modules; ``mailsvc/web/README.md`` lists their forms and fields.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Route

from mailsvc import secret_store
from mailsvc.storage.clerks import WebStore
from mailsvc.storage.guard import password_guard
from mailsvc.web.actions import ClerkActions, ClerkServices
from mailsvc.web.api import JsonApi
from mailsvc.web.auth import SECRET_NAME, ClerkAuth
from mailsvc.web.clerk_admin import AdminPages
from mailsvc.web.clerk_councillors import CouncillorPages
from mailsvc.web.clerk_receipts import ReceiptPages
from mailsvc.web.clerk_sessions import SessionPages
from mailsvc.web.clerk_signin import ClerkGate
from mailsvc.web.pages import ClerkPages, clerk_script
from provisioning.directory import Directory


def secure_cookies(public_url: str) -> bool:
    """Cookies are marked Secure when the service is reached over https."""
    return public_url.strip().lower().startswith("https://")


def clerk_routes(
    services: ClerkServices,
    store: WebStore,
    directory: Directory,
    *,
    templates_dir: Path | None = None,
) -> list[BaseRoute]:
    """The clerks' pages and ``/api`` routes (their tables are made with the schema)."""
    settings = services.settings
    actions = ClerkActions(services, store)
    pages = ClerkPages(settings, templates_dir)
    auth = ClerkAuth(
        directory,
        settings.web.clerks_group,
        settings.domain,
        secret_store.load_or_create_secret(settings, SECRET_NAME, length=48),
    )
    gate = ClerkGate(
        settings,
        actions,
        pages,
        auth=auth,
        store=store,
        guard=password_guard(settings, services.queue.units),
        secure_cookies=secure_cookies(settings.web.public_url),
    )
    clerk_pages = _clerk_pages(
        gate,
        CouncillorPages(settings, actions, pages),
        SessionPages(settings, actions, pages),
        ReceiptPages(settings, actions, pages),
        AdminPages(settings, actions, pages),
    )
    return [*clerk_pages, *JsonApi(actions, store).routes()]


def _clerk_pages(
    gate: ClerkGate,
    councillors: CouncillorPages,
    sessions: SessionPages,
    receipts: ReceiptPages,
    admin: AdminPages,
) -> list[BaseRoute]:
    p = gate.page
    c, s, r = councillors, sessions, receipts
    return [
        Route("/login", gate.login_form, methods=["GET"]),
        Route("/login", gate.login, methods=["POST"]),
        Route("/logout", p(gate.logout), methods=["POST"]),
        Route("/", p(s.dashboard), methods=["GET"]),
        Route("/councillors", p(c.councillors), methods=["GET"]),
        Route("/councillors/import", p(c.import_form), methods=["GET"]),
        Route("/councillors/import", p(c.import_preview), methods=["POST"]),
        Route("/councillors/import/apply", p(c.import_apply), methods=["POST"]),
        Route("/councillors/letters/{key}", p(c.letter), methods=["GET"]),
        Route("/councillors/{address}/reset-password", p(c.reset_password), methods=["POST"]),
        Route("/councillors/{address}/end-mandate", p(c.end_mandate), methods=["POST"]),
        Route("/sessions", p(s.sessions), methods=["GET"]),
        Route("/sessions", p(s.create_session), methods=["POST"]),
        Route("/sessions/{id:int}", p(s.session), methods=["GET"]),
        Route("/sessions/{id:int}/agenda", p(s.add_agenda_item), methods=["POST"]),
        Route("/sessions/{id:int}/documents", p(s.upload), methods=["POST"]),
        Route("/sessions/{id:int}/distributions/check", p(s.check_notice), methods=["POST"]),
        Route("/sessions/{id:int}/distributions", p(s.schedule), methods=["POST"]),
        Route("/distributions/{id:int}/cancel", p(s.cancel), methods=["POST"]),
        Route("/sessions/{id:int}/receipts", p(r.receipts), methods=["GET"]),
        Route("/sessions/{id:int}/receipts.json", p(r.receipts_json), methods=["GET"]),
        Route("/sessions/{id:int}/receipts.csv", p(r.receipts_csv), methods=["GET"]),
        Route("/sessions/{id:int}/receipts.pdf", p(r.receipts_pdf), methods=["GET"]),
        Route("/sessions/{id:int}/evidence.pdf", p(r.evidence_pdf), methods=["GET"]),
        Route("/relay", p(admin.relay), methods=["GET"]),
        Route("/audit", p(admin.audit), methods=["GET"]),
        Route("/queue", p(admin.queue), methods=["GET"]),
        Route("/queue/retry", p(admin.retry), methods=["POST"]),
        Route("/static/clerk.js", clerk_script, methods=["GET"]),
    ]
