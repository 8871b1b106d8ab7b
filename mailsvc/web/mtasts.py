"""The MTA-STS policy (RFC 8461) at /.well-known/mta-sts.txt: the very text whose digest is the
id that `mailsvc dns` prints for the ``_mta-sts`` record, so the two always agree.

Senders fetch it as https://mta-sts.<domain>/.well-known/mta-sts.txt: the HTTPS front (the
proxy before the web port) must answer for that name. With ``mta_sts.mode`` empty no policy is
served (404), as without the feature.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailsvc.config import Settings
from mailsvc.relay.dnsrecords import mta_sts_policy

POLICY_PATH = "/.well-known/mta-sts.txt"


def mta_sts_routes(settings: Settings) -> Sequence[BaseRoute]:
    policy = mta_sts_policy(settings)  # fixed for the life of the process, as the settings
    if not policy:
        return []

    async def serve(request: Request) -> Response:
        return Response(policy, media_type="text/plain")

    return [Route(POLICY_PATH, serve, methods=["GET"])]
