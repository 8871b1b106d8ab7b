"""Signing the evidence pack: PAdES with the office's certificate (pyhanko), validation data
embedded (B-LT style) and, when configured, an RFC 3161 timestamp.

The certificate comes from ``evidence.signing_certificate`` (a PKCS#12 file, e.g. exported from
the office's qualified or organisational certificate). Without one, a self-signed certificate
is made once under ``<var_dir>/secrets/`` so that a pack can always be signed and checked for
later changes; the pack then says on its first page that the signer is not certified by
anyone. pyhanko is blocking: callers run :func:`sign_pdf` in a thread.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers, timestamps
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from mailsvc.config import Settings
from mailsvc.errors import MailsvcError
from mailsvc.secret_store import load_or_create_secret, secret_path
from mailsvc.tmpfiles import writer_tmp

SELF_SIGNED_FILE = "evidence-signing.p12"
SELF_SIGNED_PASSWORD = "evidence-signing.pass"  # noqa: S105 (a file name)
FIELD_NAME = "EvidencePack"


class SigningError(MailsvcError):
    """The pack cannot be signed: the certificate is missing, unreadable or expired."""


@dataclass(frozen=True)
class Identity:
    """Who signs: the PKCS#12 file, its password, and what the pack says about it."""

    path: Path
    password: bytes | None
    self_signed: bool
    subject: str  # RFC 4514, e.g. "CN=Rada Miasta Przykładowo,O=Rada Miasta Przykładowo"
    not_after: datetime  # aware, UTC
    fingerprint: str  # SHA-256 of the certificate, hex


def identity(settings: Settings) -> Identity:
    """The configured signing identity, or the self-signed one (made on first use)."""
    configured = settings.evidence.signing_certificate
    if configured:
        password = None
        if settings.evidence.signing_password_file:
            try:
                first = Path(settings.evidence.signing_password_file).read_text("utf-8")
            except OSError as exc:
                raise SigningError(
                    f"evidence.signing_password_file: cannot read it ({exc.strerror})"
                ) from exc
            password = first.splitlines()[0].encode("utf-8") if first else b""
        return _describe(Path(configured), password, self_made=False)
    path = secret_path(settings, SELF_SIGNED_FILE)
    password = load_or_create_secret(settings, SELF_SIGNED_PASSWORD).encode("ascii")
    if not path.exists():
        _make_self_signed(path, password, settings.council.name)
    return _describe(path, password, self_made=True)


def _describe(path: Path, password: bytes | None, *, self_made: bool) -> Identity:
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(path.read_bytes(), password)
    except FileNotFoundError:
        raise SigningError(f"evidence.signing_certificate: no such file: {path}") from None
    except (OSError, ValueError) as exc:
        raise SigningError(
            f"evidence.signing_certificate {path}: not a PKCS#12 file this password opens ({exc})"
        ) from exc
    if key is None or cert is None:
        raise SigningError(f"evidence.signing_certificate {path}: holds no key and certificate")
    not_after = cert.not_valid_after_utc
    if not_after <= datetime.now(UTC):
        raise SigningError(f"the signing certificate {path} expired on {not_after:%Y-%m-%d}")
    return Identity(
        path,
        password,
        self_made or cert.issuer == cert.subject,
        cert.subject.rfc4514_string(),
        not_after,
        cert.fingerprint(hashes.SHA256()).hex(),
    )


def _make_self_signed(path: Path, password: bytes, council: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{council} (mailsvc, self-signed)"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, council[:64]),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    data = pkcs12.serialize_key_and_certificates(
        b"evidence", key, cert, None, serialization.BestAvailableEncryption(password)
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = writer_tmp(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # another process made one meanwhile: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _validation_context(signer: signers.SimpleSigner, tsa_roots: Path | None) -> ValidationContext:
    # The signer's own chain (and the TSA's roots, when given) anchor the embedded validation
    # data; nothing is fetched (the service may have no route to the internet).
    roots = [signer.signing_cert, *signer.cert_registry]
    if tsa_roots is not None:
        try:
            pem = tsa_roots.read_bytes()
        except OSError as exc:
            raise SigningError(f"evidence.tsa_ca_file: cannot read it ({exc.strerror})") from exc
        for cert in x509.load_pem_x509_certificates(pem):
            roots.append(asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)))
    return ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")


def sign_pdf(
    pdf: bytes,
    who: Identity,
    *,
    reason: str,
    location: str,
    tsa_url: str = "",
    tsa_roots: Path | None = None,
) -> bytes:
    """``pdf`` signed (PAdES baseline, SHA-256) with validation data embedded, and with a
    timestamp from ``tsa_url`` when given (``tsa_roots``: a PEM file with the TSA's root
    certificates, to validate its token). Blocking."""
    try:
        signer = signers.SimpleSigner.load_pkcs12(  # type: ignore[no-untyped-call]
            str(who.path), passphrase=who.password
        )
    except Exception as exc:  # pyhanko raises several kinds for a bad file
        raise SigningError(f"cannot load the signing certificate {who.path}: {exc}") from exc
    if signer is None:
        raise SigningError(f"cannot load the signing certificate {who.path}")
    meta = signers.PdfSignatureMetadata(
        field_name=FIELD_NAME,
        md_algorithm="sha256",
        subfilter=SigSeedSubFilter.PADES,
        embed_validation_info=True,
        validation_context=_validation_context(signer, tsa_roots),
        reason=reason,
        location=location,
        use_pades_lta=False,
    )
    stamper = timestamps.HTTPTimeStamper(tsa_url) if tsa_url else None
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    try:
        out = signers.sign_pdf(writer, meta, signer=signer, timestamper=stamper)
    except Exception as exc:  # network errors of the TSA, pyhanko's signing errors
        raise SigningError(f"signing failed: {exc}") from exc
    signed: bytes = out.getvalue()
    return signed


@dataclass(frozen=True)
class Verdict:
    intact: bool  # the signed bytes are unchanged
    valid: bool  # the signature is cryptographically valid
    covers_document: bool  # nothing but validation data was added after signing
    signer: str
    timestamped: bool


def verify_pdf(pdf: bytes, who: Identity | None = None) -> Verdict:
    """Check the pack's signature (blocking): intact, valid, and covering the whole document
    apart from validation data added after it. ``who``: trust that signer's certificate."""
    roots = []
    if who is not None:
        _, cert, _ = pkcs12.load_key_and_certificates(who.path.read_bytes(), who.password)
        if cert is not None:
            roots.append(asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)))
    context = ValidationContext(
        trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail"
    )
    try:
        reader = PdfFileReader(io.BytesIO(pdf))
        found = [s for s in reader.embedded_signatures if s.field_name == FIELD_NAME]
        if not found:
            return Verdict(False, False, False, "", False)
        status = validate_pdf_signature(found[0], context)
    except Exception:  # a damaged file (broken xref, cut signature) is no valid pack
        return Verdict(False, False, False, "", False)
    covers = status.coverage in (
        SignatureCoverageLevel.ENTIRE_FILE,
        SignatureCoverageLevel.ENTIRE_REVISION,
    ) and status.modification_level in (ModificationLevel.NONE, ModificationLevel.LTA_UPDATES)
    return Verdict(
        bool(status.intact),
        bool(status.valid),
        covers,
        status.signing_cert.subject.human_friendly if status.signing_cert else "",
        status.timestamp_validity is not None,
    )
