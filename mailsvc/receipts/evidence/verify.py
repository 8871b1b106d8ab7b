"""The receipt evidence of a session checked: every distribution's hash chain recomputed from
the events as stored (``mailsvc evidence verify``). The chain: mailsvc.domain.evidence_chain."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.domain.evidence_chain import Break, DistributionCheck, verify_distribution
from mailsvc.storage.chain import session_chains


@dataclass(frozen=True)
class CheckedDistribution:
    kind: str  # notice, supplement, …
    check: DistributionCheck


@dataclass(frozen=True)
class SessionCheck:
    session: str
    distributions: tuple[CheckedDistribution, ...]

    @property
    def broken(self) -> Break | None:
        """The first broken link, in the order of the distributions' ids."""
        for d in self.distributions:
            if d.check.broken is not None:
                return d.check.broken
        return None

    @property
    def checked(self) -> int:
        return sum(d.check.checked for d in self.distributions)

    @property
    def legacy(self) -> int:
        return sum(d.check.legacy for d in self.distributions)


async def verify_session(engine: AsyncEngine, number: str) -> SessionCheck | None:
    """Every distribution of session ``number`` checked (None: no such session)."""
    chains = await session_chains(engine, number)
    if chains is None:
        return None

    def check() -> tuple[CheckedDistribution, ...]:
        return tuple(
            CheckedDistribution(c.kind, verify_distribution(c.distribution_id, c.head, c.events))
            for c in chains
        )

    # Two SHA-256 per event: tens of thousands for a large session, off the event loop.
    return SessionCheck(number, await asyncio.to_thread(check))
