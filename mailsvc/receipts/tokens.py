"""Signed tokens that tie a mail, a link or a download to one recipient.

Three purposes, each with its own key derived from the one secret, so that a token made for one
purpose never verifies as another:

* **VERP** (``bounces+TOKEN@domain``): lowercase ``[a-z0-9]`` only, because MTAs may lowercase
  local parts. The recipient id in decimal followed by 20 base32 characters of HMAC-SHA256
  (100 bits). Verified case-insensitively.
* **Acknowledgement link**: recipient, distribution and expiry, URL-safe base64 of a packed
  record followed by a 128-bit HMAC.
* **Document download**: recipient, document sha256 and expiry, the same way.

An expired but authentic token still verifies, flagged ``expired=True``: the page can then say
"this link has expired" instead of "unknown link". Anything forged or malformed verifies as
``None``; verification never raises.

Times: a naive ``datetime`` is taken as UTC (the project's storage convention); an aware one is
converted. Expiry is kept to the second and returned as naive UTC.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

MIN_KEY_BYTES = 32

# Ids are stored as unsigned 64-bit numbers in ack/download tokens and as at most 20 decimal
# digits in VERP tokens; both hold any database id.
_MAX_ID = 2**64 - 1

_VERP_MAC_CHARS = 20  # 20 base32 characters = 100 bits of HMAC
_VERP = re.compile(r"(?P<id>0|[1-9][0-9]{0,19})(?P<mac>[a-z2-7]{20})", re.ASCII)

_ACK_TAG = b"A"
_DOWNLOAD_TAG = b"D"
_ACK_RECORD = struct.Struct(">cQQq")  # tag, recipient, distribution, expiry (Unix seconds)
_DOWNLOAD_RECORD = struct.Struct(">cQ32sq")  # tag, recipient, sha256 digest, expiry
_MAC_BYTES = 16  # 128 bits
_SHA256_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)
_URLSAFE = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
# Longest encoded record (download: 49 + 16 bytes -> 87 characters); longer input is refused
# before any decoding work.
_MAX_TOKEN_CHARS = 128


@dataclass(frozen=True)
class AckClaim:
    """What an authentic acknowledgement token says."""

    recipient_id: int
    distribution_id: int
    expires_at: datetime  # naive UTC
    expired: bool


@dataclass(frozen=True)
class DownloadClaim:
    """What an authentic download token says."""

    recipient_id: int
    sha256: str  # lowercase hex
    expires_at: datetime  # naive UTC
    expired: bool


class TokenSigner:
    """Makes and checks the signed tokens; holds the secret key and nothing else."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(
                f"token key: {len(key)} bytes given, at least {MIN_KEY_BYTES} needed "
                "(generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        # One derived key per purpose: domain separation without relying on formats differing.
        self._verp_key = _derive(key, b"verp")
        self._ack_key = _derive(key, b"ack")
        self._download_key = _derive(key, b"download")

    # --- VERP ---------------------------------------------------------------------------------

    def verp_token(self, recipient_id: int) -> str:
        """``bounces+<token>@domain`` local-part token for ``recipient_id``: ``[a-z0-9]``, ≤ 40."""
        _check_id(recipient_id, "recipient_id")
        digits = str(recipient_id)
        return digits + self._verp_mac(digits)

    def verify_verp(self, token: str) -> int | None:
        """The recipient id of an authentic VERP token (any letter case), else ``None``."""
        if not isinstance(token, str) or len(token) > 2 * _MAX_TOKEN_CHARS:
            return None
        match = _VERP.fullmatch(token.lower())
        if match is None:
            return None
        digits, mac = match["id"], match["mac"]
        recipient_id = int(digits)
        if recipient_id > _MAX_ID:
            return None
        if not hmac.compare_digest(mac, self._verp_mac(digits)):
            return None
        return recipient_id

    def _verp_mac(self, digits: str) -> str:
        digest = hmac.digest(self._verp_key, digits.encode("ascii"), "sha256")
        # 15 bytes encode to exactly 24 base32 characters; keep the first 20 (100 bits).
        return base64.b32encode(digest[:15]).decode("ascii").lower()[:_VERP_MAC_CHARS]

    # --- acknowledgement links ----------------------------------------------------------------

    def ack_token(self, recipient_id: int, distribution_id: int, expires_at: datetime) -> str:
        """URL-safe token for the acknowledgement link of one recipient of one distribution."""
        _check_id(recipient_id, "recipient_id")
        _check_id(distribution_id, "distribution_id")
        record = _ACK_RECORD.pack(_ACK_TAG, recipient_id, distribution_id, _epoch(expires_at))
        return _seal(self._ack_key, record)

    def verify_ack(self, token: str, now: datetime) -> AckClaim | None:
        """The claim of an authentic acknowledgement token (possibly expired), else ``None``."""
        record = _open(self._ack_key, token, _ACK_RECORD.size)
        if record is None:
            return None
        tag, recipient_id, distribution_id, expires = _ACK_RECORD.unpack(record)
        if tag != _ACK_TAG:
            return None
        expires_at = _from_epoch(expires)
        if expires_at is None:
            return None
        return AckClaim(
            recipient_id=recipient_id,
            distribution_id=distribution_id,
            expires_at=expires_at,
            expired=_epoch(now) >= expires,
        )

    # --- document downloads -------------------------------------------------------------------

    def download_token(self, recipient_id: int, sha256: str, expires_at: datetime) -> str:
        """URL-safe token for one recipient's download of the document with ``sha256``."""
        _check_id(recipient_id, "recipient_id")
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256.lower()):
            raise ValueError(f"sha256 {sha256!r}: expected 64 hexadecimal digits")
        record = _DOWNLOAD_RECORD.pack(
            _DOWNLOAD_TAG, recipient_id, bytes.fromhex(sha256), _epoch(expires_at)
        )
        return _seal(self._download_key, record)

    def verify_download(self, token: str, now: datetime) -> DownloadClaim | None:
        """The claim of an authentic download token (possibly expired), else ``None``."""
        record = _open(self._download_key, token, _DOWNLOAD_RECORD.size)
        if record is None:
            return None
        tag, recipient_id, digest, expires = _DOWNLOAD_RECORD.unpack(record)
        if tag != _DOWNLOAD_TAG:
            return None
        expires_at = _from_epoch(expires)
        if expires_at is None:
            return None
        return DownloadClaim(
            recipient_id=recipient_id,
            sha256=digest.hex(),
            expires_at=expires_at,
            expired=_epoch(now) >= expires,
        )


def _derive(key: bytes, purpose: bytes) -> bytes:
    return hmac.digest(key, b"mailsvc token key\x00" + purpose, hashlib.sha256)


def _check_id(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
        raise ValueError(f"{name} {value!r}: expected an integer from 0 to {_MAX_ID}")


def _epoch(moment: datetime) -> int:
    """Whole Unix seconds of ``moment`` (naive = UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return calendar.timegm(moment.timetuple())


def _from_epoch(seconds: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None  # authentic tokens always hold a representable time


def _seal(key: bytes, record: bytes) -> str:
    return _encode(record + hmac.digest(key, record, hashlib.sha256)[:_MAC_BYTES])


def _open(key: bytes, token: str, record_size: int) -> bytes | None:
    """The record of an authentic token of ``record_size`` bytes, else ``None``."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        return None
    if not _URLSAFE.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:  # binascii.Error is a ValueError
        return None
    # Only the canonical spelling counts: the unused low bits of the last character must be
    # zero, so that no two distinct strings are the same token.
    if len(raw) != record_size + _MAC_BYTES or _encode(raw) != token:
        return None
    record, mac = raw[:record_size], raw[record_size:]
    expected = hmac.digest(key, record, hashlib.sha256)[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        return None
    return record


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
