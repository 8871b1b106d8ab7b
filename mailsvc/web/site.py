"""Assembles the clerks' interface and the JSON API over the service's parts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from mailsvc import secret_store
from mailsvc.storage.clerks import WebStore
from mailsvc.web.actions import ClerkActions
from mailsvc.web.api import JsonApi
from mailsvc.web.auth import SECRET_NAME, ClerkAuth, LoginLimiter
from mailsvc.web.clerk import ClerkPages, ClerkSite

if TYPE_CHECKING:
    from mailsvc.app import Parts


def secure_cookies(public_url: str) -> bool:
    """Cookies are marked Secure when the service is reached over https."""
    return public_url.strip().lower().startswith("https://")


def clerk_routes(parts: Parts, *, templates_dir: Path | None = None) -> list[BaseRoute]:
    """The clerks' pages and ``/api`` routes (their tables are made with the schema)."""
    settings = parts.settings
    store = WebStore(parts.engine)
    actions = ClerkActions(parts, store)
    auth = ClerkAuth(
        parts.directory,
        settings.web.clerks_group,
        settings.domain,
        secret_store.load_or_create_secret(settings, SECRET_NAME, length=48),
    )
    site = ClerkSite(
        settings=settings,
        actions=actions,
        auth=auth,
        store=store,
        pages=ClerkPages(settings, templates_dir),
        limiter=LoginLimiter(settings.web.login_attempts, settings.web.login_window_minutes * 60.0),
        secure_cookies=secure_cookies(settings.web.public_url),
    )
    return [*site.routes(), *JsonApi(actions, store).routes()]
