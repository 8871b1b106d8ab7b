"""Mail programs setting themselves up: Thunderbird's autoconfig, Outlook's POX autodiscover and
an Apple configuration profile, all public (a program asks before it has a password).

They tell nothing that the credentials letter does not print: server names and ports. Whether
an address exists is never looked up, so none of them can be used to probe for accounts; an
address outside the council's domain gets no settings at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from mailsvc.config import Settings
from mailsvc.domain.clientsetup import (
    AUTOCONFIG_PATHS,
    AUTODISCOVER_PATHS,
    INVALID_REQUEST,
    MOBILECONFIG_PATH,
    MOBILECONFIG_TYPE,
    NOT_OURS,
    OUTLOOK_SCHEMA,
    SCHEMA_NOT_OFFERED,
    ClientSetup,
    Security,
    Server,
    UnsafeRequest,
    address_in_domain,
    apple_profile,
    autoconfig_xml,
    autodiscover_error,
    autodiscover_xml,
    is_address,
    profile_filename,
    read_autodiscover_request,
)
from mailsvc.web.http import content_disposition

log = logging.getLogger(__name__)

XML = "application/xml"
# An Outlook request is a few hundred bytes; anything much larger is not one.
MAX_REQUEST_BYTES = 16 * 1024


def client_setup(settings: Settings) -> ClientSetup:
    """The servers councillors' programs use (``[clients]``, with what empty values mean)."""

    def server(values: tuple[str, int, str]) -> Server:
        host, port, security = values
        return Server(host, port, cast(Security, security))

    smtps = settings.client_smtps
    return ClientSetup(
        domain=settings.domain,
        name=settings.council.name,
        imap=server(settings.client_imap),
        smtp=server(settings.client_smtp),
        smtps=server(smtps) if smtps is not None else None,
    )


class MailClientRoutes:
    """``GET`` autoconfig (both paths), ``GET|POST`` autodiscover, ``GET /mobileconfig``."""

    def __init__(self, setup: ClientSetup) -> None:
        self.setup = setup
        self._autoconfig = autoconfig_xml(setup)  # the same for everyone: built once

    def routes(self) -> Sequence[BaseRoute]:
        return [
            *(Route(p, self.autoconfig, methods=["GET"]) for p in AUTOCONFIG_PATHS),
            *(Route(p, self.autodiscover, methods=["GET", "POST"]) for p in AUTODISCOVER_PATHS),
            Route(MOBILECONFIG_PATH, self.mobileconfig, methods=["GET"]),
        ]

    async def autoconfig(self, request: Request) -> Response:
        """Thunderbird's file. ``?emailaddress=`` is optional; the file names no address (the
        program fills its own in), but an address in another domain gets a 404."""
        if self._foreign(request.query_params.get("emailaddress")):
            return PlainTextResponse("not a mailbox of this council\n", status_code=404)
        return Response(self._autoconfig, media_type=XML)

    async def autodiscover(self, request: Request) -> Response:
        """Outlook's POX autodiscover: settings for an address in the council's domain, an
        error response for any other; a GET (a probe) gets "invalid request"."""
        if request.method != "POST":
            return Response(autodiscover_error(INVALID_REQUEST), media_type=XML)
        body = await _bounded_body(request, MAX_REQUEST_BYTES)
        if body is None:
            return PlainTextResponse("request too large\n", status_code=413)
        try:
            asked = read_autodiscover_request(body)
        except UnsafeRequest as exc:
            log.info("autodiscover: refused a request from %s: %s", _client(request), exc)
            return PlainTextResponse("malformed autodiscover request\n", status_code=400)
        if asked.schema.strip() not in ("", OUTLOOK_SCHEMA):  # e.g. ActiveSync's: not ours
            return Response(autodiscover_error(SCHEMA_NOT_OFFERED), media_type=XML)
        address = address_in_domain(asked.address, self.setup.domain)
        if address is None:
            return Response(autodiscover_error(NOT_OURS), media_type=XML)
        return Response(autodiscover_xml(self.setup, address), media_type=XML)

    async def mobileconfig(self, request: Request) -> Response:
        """The Apple profile, for ``?email=`` when given (else the device asks for it)."""
        email = request.query_params.get("email")
        address = address_in_domain(email, self.setup.domain)
        if email and address is None:
            if is_address(email):
                return PlainTextResponse("not a mailbox of this council\n", status_code=404)
            return PlainTextResponse("email: expected an e-mail address\n", status_code=400)
        return Response(
            apple_profile(self.setup, address),
            media_type=MOBILECONFIG_TYPE,
            headers={"content-disposition": content_disposition(profile_filename(self.setup))},
        )

    def _foreign(self, email: str | None) -> bool:
        """An address, but in another domain (garbage is merely ignored: placeholders)."""
        return is_address(email) and address_in_domain(email, self.setup.domain) is None


def mail_client_routes(settings: Settings) -> Sequence[BaseRoute]:
    return MailClientRoutes(client_setup(settings)).routes()


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"
