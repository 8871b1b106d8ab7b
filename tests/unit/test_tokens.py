"""Signed tokens: round trips, tampering, wrong keys, purpose confusion, expiry, junk input."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailsvc.receipts.tokens import AckClaim, DownloadClaim, TokenSigner

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
NOW = datetime(2026, 5, 7, 12, 0, 0)
LATER = NOW + timedelta(days=30)

# Characters a tampered token may get: the token alphabets plus junk.
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=+/.%ł "


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(KEY)


def _variants(token: str) -> list[str]:
    """Every single-character substitution, deletion and insertion of ``token``."""
    out: set[str] = set()
    for i in range(len(token)):
        out.add(token[:i] + token[i + 1 :])
        for char in _ALPHABET:
            out.add(token[:i] + char + token[i + 1 :])
            out.add(token[:i] + char + token[i:])
    out.discard(token)
    return sorted(out)


# --- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 16, 31])
def test_short_key_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        TokenSigner(b"k" * length)


def test_key_of_32_bytes_is_accepted() -> None:
    assert TokenSigner(b"k" * 32).verify_verp(TokenSigner(b"k" * 32).verp_token(1)) == 1


# --- VERP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipient_id", [0, 1, 42, 123_456_789, 2**63 - 1, 2**64 - 1])
def test_verp_round_trip_is_lowercase_alphanumeric_and_short(
    signer: TokenSigner, recipient_id: int
) -> None:
    token = signer.verp_token(recipient_id)
    assert re.fullmatch(r"[a-z0-9]+", token)
    assert len(token) <= 40
    assert signer.verify_verp(token) == recipient_id


def test_verp_tokens_differ_per_recipient(signer: TokenSigner) -> None:
    tokens = {signer.verp_token(i) for i in range(200)}
    assert len(tokens) == 200


@pytest.mark.parametrize("change", [str.upper, str.title, str.swapcase])
def test_verp_survives_case_changes(signer: TokenSigner, change: object) -> None:
    token = signer.verp_token(4711)
    assert callable(change)
    changed = change(token)
    assert changed != token
    assert signer.verify_verp(changed) == 4711


def test_verp_any_tampering_is_refused(signer: TokenSigner) -> None:
    token = signer.verp_token(4711)
    accepted = [v for v in _variants(token) if signer.verify_verp(v) is not None]
    # Only case changes of the same token may pass.
    assert all(v.lower() == token for v in accepted), accepted


def test_verp_with_another_id_and_the_same_mac_is_refused(signer: TokenSigner) -> None:
    token = signer.verp_token(4711)
    assert signer.verify_verp("4712" + token[4:]) is None
    assert signer.verify_verp("04711" + token[4:]) is None  # non-canonical id


def test_verp_from_another_key_is_refused(signer: TokenSigner) -> None:
    assert signer.verify_verp(TokenSigner(OTHER_KEY).verp_token(4711)) is None


def test_verp_id_out_of_range_is_refused_when_signing(signer: TokenSigner) -> None:
    for bad in (-1, 2**64, True):
        with pytest.raises(ValueError, match="recipient_id"):
            signer.verp_token(bad)


# --- acknowledgement tokens ----------------------------------------------------------------------


def test_ack_round_trip(signer: TokenSigner) -> None:
    token = signer.ack_token(17, 3, LATER)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert signer.verify_ack(token, NOW) == AckClaim(17, 3, LATER, expired=False)


def test_ack_binds_recipient_and_distribution(signer: TokenSigner) -> None:
    claims = {
        signer.verify_ack(signer.ack_token(r, d, LATER), NOW)
        for r, d in [(1, 2), (2, 1), (1, 3), (3, 1)]
    }
    assert {(c.recipient_id, c.distribution_id) for c in claims if c} == {
        (1, 2),
        (2, 1),
        (1, 3),
        (3, 1),
    }


def test_ack_expired_token_is_authentic_but_flagged(signer: TokenSigner) -> None:
    token = signer.ack_token(17, 3, LATER)
    at_expiry = signer.verify_ack(token, LATER)
    just_before = signer.verify_ack(token, LATER - timedelta(seconds=1))
    assert at_expiry is not None and at_expiry.expired
    assert just_before is not None and not just_before.expired


def test_ack_expiry_is_whole_seconds_naive_utc(signer: TokenSigner) -> None:
    warsaw_summer = timezone(timedelta(hours=2))
    aware = datetime(2026, 6, 1, 14, 30, 15, 999_999, tzinfo=warsaw_summer)
    claim = signer.verify_ack(signer.ack_token(1, 1, aware), NOW)
    assert claim is not None
    assert claim.expires_at == datetime(2026, 6, 1, 12, 30, 15)
    # An aware "now" is compared correctly with the naive-UTC expiry.
    after = datetime(2026, 6, 1, 14, 30, 16, tzinfo=warsaw_summer)
    later_claim = signer.verify_ack(signer.ack_token(1, 1, aware), after.astimezone(UTC))
    assert later_claim is not None and later_claim.expired


def test_ack_any_tampering_is_refused(signer: TokenSigner) -> None:
    token = signer.ack_token(17, 3, LATER)
    accepted = [v for v in _variants(token) if signer.verify_ack(v, NOW) is not None]
    assert accepted == []


def test_ack_from_another_key_is_refused(signer: TokenSigner) -> None:
    assert signer.verify_ack(TokenSigner(OTHER_KEY).ack_token(17, 3, LATER), NOW) is None


# --- download tokens -----------------------------------------------------------------------------


def test_download_round_trip_normalises_hex_case(signer: TokenSigner) -> None:
    token = signer.download_token(17, SHA.upper(), LATER)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert signer.verify_download(token, NOW) == DownloadClaim(17, SHA, LATER, expired=False)


def test_download_expired_is_flagged(signer: TokenSigner) -> None:
    claim = signer.verify_download(signer.download_token(17, SHA, NOW), NOW)
    assert claim is not None and claim.expired


def test_download_any_tampering_is_refused(signer: TokenSigner) -> None:
    token = signer.download_token(17, SHA, LATER)
    accepted = [v for v in _variants(token) if signer.verify_download(v, NOW) is not None]
    assert accepted == []


def test_download_from_another_key_is_refused(signer: TokenSigner) -> None:
    token = TokenSigner(OTHER_KEY).download_token(17, SHA, LATER)
    assert signer.verify_download(token, NOW) is None


@pytest.mark.parametrize("bad", ["", "abc", SHA[:-1], SHA + "0", "g" * 64])
def test_download_refuses_a_bad_digest_when_signing(signer: TokenSigner, bad: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        signer.download_token(1, bad, LATER)


# --- purposes never mix -------------------------------------------------------------------------


def test_a_token_verifies_only_for_its_own_purpose(signer: TokenSigner) -> None:
    verp = signer.verp_token(17)
    ack = signer.ack_token(17, 3, LATER)
    download = signer.download_token(17, SHA, LATER)
    assert signer.verify_ack(verp, NOW) is None
    assert signer.verify_download(verp, NOW) is None
    assert signer.verify_verp(ack) is None
    assert signer.verify_download(ack, NOW) is None
    assert signer.verify_verp(download) is None
    assert signer.verify_ack(download, NOW) is None


# --- junk never raises ------------------------------------------------------------------------


JUNK: list[object] = [
    "",
    " ",
    "=",
    "====",
    "a" * 10_000,
    "A" * 55,
    "A" * 87,
    "ł" * 40,
    "İ" * 30,
    "\x00" * 40,
    "0" * 40,
    "1" * 21 + "a" * 20,
    "../../etc/passwd",
    "%2e%2e",
    None,
    12,
    b"bytes",
]


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_malformed_input_verifies_as_none(signer: TokenSigner, junk: object) -> None:
    assert signer.verify_verp(junk) is None  # type: ignore[arg-type]
    assert signer.verify_ack(junk, NOW) is None  # type: ignore[arg-type]
    assert signer.verify_download(junk, NOW) is None  # type: ignore[arg-type]
