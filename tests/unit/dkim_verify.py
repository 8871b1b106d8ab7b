"""dkimpy's verification of our signatures, keys asked of a real DNS server (the loopback zone
of test_authres) through dnspython: what a receiving server does. Blocking: run it in a thread
when the zone answers from the test's own loop."""

from __future__ import annotations

from dataclasses import dataclass

import dkim
import dns.resolver


@dataclass(frozen=True)
class Checked:
    selector: str
    algorithm: str
    domain: str
    ok: bool
    why: str = ""


def zone_lookup(resolver: dns.resolver.Resolver) -> object:
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii").rstrip("."), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(answer[0].strings)  # type: ignore[attr-defined]

    return dnsfunc


def verify_all(message: bytes, resolver: dns.resolver.Resolver) -> list[Checked]:
    """Every DKIM-Signature of ``message`` verified on its own, top first."""
    verifier = dkim.DKIM(message, minkey=2048)
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    out = []
    for idx in range(count):
        sig, _, _ = verifier.verify_headerprep(idx)
        selector = sig[b"s"].decode()
        algorithm = sig[b"a"].decode()
        domain = sig[b"d"].decode()
        try:
            ok = verifier.verify(idx=idx, dnsfunc=zone_lookup(resolver))
            why = "" if ok else "signature or key"
        except dkim.DKIMException as exc:
            ok, why = False, str(exc)
        out.append(Checked(selector, algorithm, domain, bool(ok), why))
    return out
