"""Assembles the clerks' interface and the JSON API over the use cases ``serve`` built."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute

from mailsvc import secret_store
from mailsvc.storage.clerks import WebStore
from mailsvc.web.actions import ClerkActions, ClerkServices
from mailsvc.web.api import JsonApi
from mailsvc.web.auth import SECRET_NAME, ClerkAuth, LoginLimiter
from mailsvc.web.clerk import ClerkPages, ClerkSite
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
    auth = ClerkAuth(
        directory,
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
