"""TLS for the SMTP servers: configured PEM files, or a self-signed pair made once ("auto")."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailsvc.config import Settings
from mailsvc.errors import ConfigError


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``hostname`` (a name, or an IP address) under
    ``directory`` (made on first use)."""
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_pem, cert_pem = self_signed_pair(hostname, [_subject_name(hostname)], days=3650)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    cert_path.write_bytes(cert_pem)
    return cert_path, key_path


def self_signed_pair(
    common_name: str, alt_names: list[x509.GeneralName], *, days: int
) -> tuple[bytes, bytes]:
    """A new EC key and a self-signed certificate for it, both PEM: (key, certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _subject_name(hostname: str) -> x509.GeneralName:
    # Clients match an address only against an IP address entry, never a DNS one.
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The STARTTLS context from settings, or None when TLS is not configured."""
    cert, key = settings.smtp.tls_cert, settings.smtp.tls_key
    if not cert:
        return None
    if cert == "auto":
        cert_path, key_path = ensure_self_signed(settings.var_dir / "tls", settings.smtp_hostname)
    else:
        cert_path, key_path = Path(cert), Path(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"smtp.tls_cert = {str(cert_path)!r}: cannot load the certificate and key ({exc})"
        ) from None
    return context
