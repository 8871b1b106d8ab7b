"""Signing the evidence pack: the configured PKCS#12 or the self-signed identity, the notice
findings, and a timestamp from an RFC 3161 authority reached over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fpdf import FPDF
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore

from mailsvc.config import Settings, load_settings
from mailsvc.receipts.evidence.pack import deliveries_by_deadline
from mailsvc.receipts.evidence.signing import SigningError, identity, sign_pdf, verify_pdf


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(env={}).with_changes(var_dir=tmp_path / "var")


def small_pdf() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="evidence")
    return bytes(pdf.output())


Issuer = tuple[x509.Certificate, rsa.RSAPrivateKey]


def make_cert(
    name: str, *, issuer: Issuer | None = None, tsa: bool = False
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if tsa:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
        )
    elif issuer is not None:  # a signing certificate as a CA issues it to an office
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def write_p12(path: Path, password: bytes) -> x509.Certificate:
    """The office's certificate, issued by a CA, with the CA in the file."""
    ca = make_cert("Test CA")
    cert, key = make_cert("Urząd Miasta Przykładowo", issuer=ca)
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"office", key, cert, [ca[0]], serialization.BestAvailableEncryption(password)
        )
    )
    return cert


def test_self_signed_identity_is_made_once_private_and_named(settings: Settings) -> None:
    first = identity(settings)
    assert first.self_signed and "self-signed" in first.subject
    assert first.path.stat().st_mode & 0o777 == 0o600
    assert first.path.parent.stat().st_mode & 0o777 == 0o700
    again = identity(settings)
    assert again.fingerprint == first.fingerprint  # not made anew


def test_configured_certificate_with_password_file(settings: Settings, tmp_path: Path) -> None:
    p12 = tmp_path / "office.p12"
    cert = write_p12(p12, b"tajne haslo")
    secret = tmp_path / "p12.pass"
    secret.write_text("tajne haslo\n")
    configured = settings.with_changes(
        evidence=settings.evidence.__class__(
            signing_certificate=str(p12), signing_password_file=str(secret)
        )
    )
    who = identity(configured)
    assert who.fingerprint == cert.fingerprint(hashes.SHA256()).hex()
    assert not who.self_signed and "Urząd Miasta Przykładowo" in who.subject
    signed = sign_pdf(small_pdf(), who, reason="test", location="Przykładowo")
    verdict = verify_pdf(signed, who)
    assert verdict.intact and verdict.valid and verdict.covers_document
    assert not verdict.timestamped
    assert not (settings.var_dir / "secrets").exists()  # nothing self-signed was made


def test_wrong_password_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    p12 = tmp_path / "office.p12"
    write_p12(p12, b"right")
    secret = tmp_path / "p12.pass"
    secret.write_text("wrong\n")
    configured = settings.with_changes(
        evidence=settings.evidence.__class__(
            signing_certificate=str(p12), signing_password_file=str(secret)
        )
    )
    with pytest.raises(SigningError, match="not a PKCS#12 file this password opens"):
        identity(configured)
    missing = settings.with_changes(
        evidence=settings.evidence.__class__(signing_certificate=str(tmp_path / "none.p12"))
    )
    with pytest.raises(SigningError, match="no such file"):
        identity(missing)


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An RFC 3161 authority over real HTTP: pyhanko's test stamper behind a small server."""
    root, root_key = make_cert("Test TSA root")
    leaf, leaf_key = make_cert("Test TSA", issuer=(root, root_key), tsa=True)
    der = serialization.Encoding.DER
    stamper = DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(leaf.public_bytes(der)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(
            leaf_key.private_bytes(
                der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        ),
        certs_to_embed=SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [asn1_x509.Certificate.load(root.public_bytes(der))]
        ),
    )
    roots = tmp_path / "tsa-root.pem"
    roots.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Content-Type"])
            response = stamper.request_tsa_response(tsp.TimeStampReq.load(body))
            data = response.dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsr", roots
    finally:
        server.shutdown()
        server.server_close()
    assert seen and all(t == "application/timestamp-query" for t in seen)


def test_timestamp_from_the_configured_authority(settings: Settings, tsa: tuple[str, Path]) -> None:
    who = identity(settings)
    url, roots = tsa
    signed = sign_pdf(
        small_pdf(), who, reason="test", location="Przykładowo", tsa_url=url, tsa_roots=roots
    )
    verdict = verify_pdf(signed, who)
    assert verdict.intact and verdict.valid and verdict.timestamped


def test_unreachable_authority_fails_the_signing(settings: Settings) -> None:
    who = identity(settings)
    with pytest.raises(SigningError, match="signing failed"):
        sign_pdf(small_pdf(), who, reason="t", location="p", tsa_url="http://127.0.0.1:9/tsr")


def test_unsigned_or_damaged_files_are_not_valid(settings: Settings) -> None:
    assert not verify_pdf(small_pdf()).valid
    assert not verify_pdf(b"%PDF-1.7 nothing").valid


def test_deliveries_split_by_deadline() -> None:
    deadline = date(2026, 12, 10)
    in_time, late, missing = deliveries_by_deadline(
        [
            ("a@rada.example", date(2026, 12, 10)),
            ("b@rada.example", date(2026, 12, 11)),
            ("c@rada.example", None),
            ("d@rada.example", date(2026, 12, 1)),
        ],
        deadline,
    )
    assert in_time == ("a@rada.example", "d@rada.example")
    assert late == (("b@rada.example", date(2026, 12, 11)),)
    assert missing == ("c@rada.example",)
