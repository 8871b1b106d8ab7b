"""A DNS server on loopback for the SPF/DKIM/DMARC checks of the running service.

The zone server of tests/unit/test_authres.py, in the test's loop: the service asks it through
``smtp.dns_resolver``. By default it says that example.org (the residents' domain of these
tests) sends from 127.0.0.1, so a resident's message gets spf=pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.unit.test_authres import Zone

RESIDENTS = "example.org"


@dataclass
class ResidentDns:
    zone: Zone
    port: int

    @property
    def resolver(self) -> str:
        """The value of smtp.dns_resolver."""
        return f"127.0.0.1:{self.port}"

    def spf(self, domain: str, record: str = "v=spf1 ip4:127.0.0.1 -all") -> None:
        self.zone.txt(domain, record)

    def smtp_settings(self) -> dict[str, Any]:
        """The [smtp] changes that make the service check against this zone."""
        return {"authentication_checks": True, "dns_resolver": self.resolver}


@pytest.fixture
async def resident_dns() -> AsyncIterator[ResidentDns]:
    loop = asyncio.get_running_loop()
    transport, zone = await loop.create_datagram_endpoint(Zone, local_addr=("127.0.0.1", 0))
    try:
        dns = ResidentDns(zone, transport.get_extra_info("sockname")[1])
        dns.spf(RESIDENTS)
        yield dns
    finally:
        transport.close()
