"""DKIM signatures (RFC 6376; Ed25519 per RFC 8463) for mail leaving through the smarthost.

Every configured selector signs, so an RSA and an Ed25519 signature travel side by side: a
receiver that does not know Ed25519 yet still finds the RSA one. Canonicalization is
relaxed/relaxed, which survives the re-folding and blank changes relays make.

Only mail whose From is in the DKIM domain (or a subdomain of it, e.g. the DSNs' From at
mail.<domain> if configured so) is signed: our key must not vouch for a forwarded message whose
author is somebody else's.

The signature is computed here rather than with dkimpy's ``sign``: dkimpy needs the whole message
in memory (several copies of it while it canonicalizes) and PyNaCl for Ed25519, while a
distribution copy is 27 MB. The body is hashed a window at a time (``canon``); dkimpy verifies
what this makes in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from email.utils import getaddresses
from itertools import chain

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from mailsvc.config import Settings
from mailsvc.relay.dkim.canon import (
    RelaxedBodyHash,
    header_fields,
    line_windows,
    relaxed_header,
    split_header,
)
from mailsvc.relay.dkim.keys import SigningKey, load_keys

log = logging.getLogger(__name__)

# The fields signed, each as often as it occurs (RFC 6376 5.4.2: bottom-up). From is named once
# more than it occurs, so that a second From added on the way breaks the signature.
SIGNED_FIELDS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"reply-to",
    b"sender",
)
_CRLF = b"\r\n"
_PIECE = 1024 * 1024  # a message given as one buffer is hashed in pieces of this size
_MAX_HEADER = 1024 * 1024  # a header longer than this is not one we wrote: left unsigned


def _pieces(message: bytes) -> Iterator[bytes]:
    for start in range(0, len(message), _PIECE):
        yield message[start : start + _PIECE]


def in_domain(address_domain: str, domain: str) -> bool:
    address_domain = address_domain.rstrip(".").lower()
    return address_domain == domain or address_domain.endswith("." + domain)


def author_in_domain(fields: list[tuple[bytes, bytes]], domain: str) -> bool:
    """One From field, every address in it in ``domain`` or below."""
    values = [value for name, value in fields if name.strip().lower() == b"from"]
    if len(values) != 1:
        return False
    text = values[0].decode("utf-8", "replace").replace("\r\n", "")
    addresses = [addr for _, addr in getaddresses([text]) if addr]
    return bool(addresses) and all(
        "@" in addr and in_domain(addr.rpartition("@")[2], domain) for addr in addresses
    )


def _selected(fields: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """The h= names and the canonical fields they pick, bottom-up per name (RFC 6376 5.4.2)."""
    by_name: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        by_name.setdefault(name.strip().lower(), []).append(relaxed_header(name, value))
    names: list[bytes] = []
    picked: list[bytes] = []
    for name in SIGNED_FIELDS:
        found = by_name.get(name, [])
        names += [name] * (len(found) + (name == b"from"))
        picked += [canonical + _CRLF for canonical in reversed(found)]
    return names, picked


def _fold(value: str, width: int = 72) -> str:
    return "\r\n\t".join(value[i : i + width] for i in range(0, len(value), width))


class DkimSigner:
    """The configured selectors' keys, loaded once (``load``), and ``sign``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.domain = settings.dkim_domain
        self._keys: list[SigningKey] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """A signer when DKIM is on and has selectors; reads nothing yet."""
        if not (settings.dkim.enabled and settings.dkim.selectors):
            return None
        return cls(settings)

    def load(self) -> list[SigningKey]:
        """Read the key files (blocking); ConfigError names the selector whose key is wrong."""
        with self._lock:
            if self._keys is None:
                self._keys = load_keys(self.settings)
            return self._keys

    def sign(self, message: bytes | Iterable[bytes], *, now: float | None = None) -> bytes:
        """DKIM-Signature fields for ``message`` (the whole message as it will be sent, in one
        buffer or in chunks, header first), to be put before it; b"" when it is not ours to
        sign. Blocking: hashes the body, so run it in a thread."""
        keys = self.load()
        chunks = iter(_pieces(message) if isinstance(message, bytes) else message)
        start = b""
        for chunk in chunks:
            start += chunk
            block, body_at = split_header(start)
            if body_at < len(start) or len(start) > _MAX_HEADER:
                break
        else:
            block, body_at = split_header(start)
        if len(block) > _MAX_HEADER:
            log.warning("DKIM: a header of more than %d bytes is not signed", _MAX_HEADER)
            return b""
        fields = header_fields(block)
        if not author_in_domain(fields, self.domain):
            return b""
        body = RelaxedBodyHash()
        for window in line_windows(chain((start[body_at:],), chunks)):
            body.update(window)
        body_hash = base64.b64encode(body.digest()).decode("ascii")
        names, picked = _selected(fields)
        stamp = int(time.time() if now is None else now)
        return b"".join(self._signature(key, names, picked, body_hash, stamp) for key in keys)

    def _signature(
        self, key: SigningKey, names: list[bytes], picked: list[bytes], body_hash: str, stamp: int
    ) -> bytes:
        tags = (
            f" v=1; a={key.algorithm}; c=relaxed/relaxed; d={self.domain}; s={key.selector};"
            f"\r\n\tt={stamp}; h={b':'.join(names).decode('ascii')};"
            f"\r\n\tbh={body_hash};\r\n\tb="
        ).encode("ascii")
        # The signature covers the picked fields and this field itself with b= empty, the
        # latter without its line end (RFC 6376 3.7).
        data = b"".join(picked) + relaxed_header(b"DKIM-Signature", tags)
        if isinstance(key.private, ed25519.Ed25519PrivateKey):
            signature = key.private.sign(hashlib.sha256(data).digest())
        else:
            signature = key.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        value = _fold(base64.b64encode(signature).decode("ascii"))
        return b"DKIM-Signature:" + tags + value.encode("ascii") + _CRLF
