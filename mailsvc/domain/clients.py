"""Whom a per-client limit counts: one IPv4 address, or one IPv6 /64.

An IPv6 customer usually holds a whole /64 (often more): counting single IPv6 addresses would
give an attacker 2^64 fresh identities. IPv4-mapped IPv6 addresses count as their IPv4 address.
"""

from __future__ import annotations

import ipaddress


def network_key(ip: str) -> str:
    """``"203.0.113.7"`` -> ``"203.0.113.7"``; ``"2001:db8:1:2:a::1"`` -> ``"2001:db8:1:2::/64"``.
    Anything that is not an IP address (a Unix socket, "unknown") is returned as it is."""
    try:
        address = ipaddress.ip_address(ip.strip().split("%", 1)[0])
    except ValueError:
        return ip.strip()
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
