"""TLS for the SMTP servers: configured PEM files, or a self-signed pair made once ("auto")."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailsvc.config import Settings
from mailsvc.errors import ConfigError

log = logging.getLogger(__name__)


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


# Mozilla's "intermediate" server configuration (ssl-config.mozilla.org, version 5.7): TLS 1.2
# with forward-secret AEAD ciphers only, TLS 1.3 with OpenSSL's suites (all of them AEAD). Its
# optional DHE-RSA ciphers are left out: they need a DH parameters file, and a client that speaks
# TLS 1.2 without ECDHE is too old to matter.
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)


def intermediate_context() -> ssl.SSLContext:
    """A server context with Mozilla's intermediate settings and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    # Intermediate lets the client choose (every offered cipher is strong, and a client without
    # AES hardware prefers ChaCha20); Python turns server preference on by default.
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    # No stateless tickets (their key would live as long as the process, against forward
    # secrecy), no compression (CRIME), no renegotiation asked by clients (a cheap DoS).
    context.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # Key exchange groups: Python 3.11 can set only one curve (set_ecdh_curve), which would drop
    # X25519; OpenSSL's default list (X25519, P-256, X448, P-521, P-384) covers intermediate's.
    return context


class TlsFileError(ConfigError):
    """A certificate or key file that cannot be used; the message names the file."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None


def load_pair(cert_path: Path, key_path: Path) -> tuple[ssl.SSLContext, x509.Certificate]:
    """An intermediate server context holding the certificate chain and its key, and the
    certificate itself; TlsFileError names the file that is wrong."""
    cert_pem, key_pem = _read(cert_path, "certificate"), _read(key_path, "key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsFileError(f"no PEM certificate in the certificate file {cert_path}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsFileError(f"no unencrypted PEM private key in the key file {key_path}") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise TlsFileError(
            f"the key file {key_path} does not belong to the certificate in {cert_path}"
        )
    context = intermediate_context()
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:  # e.g. a key too weak for OpenSSL's security level
        raise TlsFileError(f"cannot use the certificate file {cert_path} ({exc})") from None
    return context, chain[0]


def describe(cert: x509.Certificate) -> str:
    """'CN=mail.example.org, serial 1a2b…, valid until 2026-09-01' for the log."""
    return (
        f"{cert.subject.rfc4514_string()}, serial {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


class ServerTls:
    """The server side of TLS for STARTTLS and implicit TLS, with a certificate that can be
    replaced while the servers run (``reload``, on SIGHUP).

    ``context`` is the one object the servers are given, for good. Each handshake made with it
    asks for the current pair (OpenSSL's server-name callback, called for every ClientHello,
    with or without SNI) and continues with that context's certificate; the protocol and cipher
    settings stay those of ``context``, which every context here shares. A session that has
    done its handshake keeps what it negotiated, so a reload drops no connection.
    """

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path, self.key_path = cert_path, key_path
        self.context, cert = load_pair(cert_path, key_path)
        self.current = self.context
        self.context.sni_callback = self._choose
        log.info("TLS certificate %s: %s", cert_path, describe(cert))

    def _choose(self, conn: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        current = self.current
        if conn.context is not current:
            conn.context = current

    def reload(self) -> bool:
        """Read the files again; the next handshake uses them. A file that cannot be used
        leaves the pair in use as it is (logged, naming the file): False."""
        try:
            context, cert = load_pair(self.cert_path, self.key_path)
        except TlsFileError as exc:
            log.error("TLS reload: %s; the certificate in use is kept", exc)
            return False
        self.current = context
        log.info("TLS reload: now serving %s: %s", self.cert_path, describe(cert))
        return True


def server_tls(settings: Settings, *, auto: bool = False) -> ServerTls | None:
    """The servers' TLS from ``smtp.tls_cert``/``smtp.tls_key``: None when not configured,
    unless ``auto`` (a self-signed pair under var_dir then, as for ``tls_cert = "auto"``)."""
    cert, key = settings.smtp.tls_cert, settings.smtp.tls_key
    if not cert and not auto:
        return None
    if not cert or cert == "auto":
        cert_path, key_path = ensure_self_signed(settings.var_dir / "tls", settings.smtp_hostname)
    else:
        cert_path, key_path = Path(cert), Path(key)
    try:
        return ServerTls(cert_path, key_path)
    except TlsFileError as exc:
        raise ConfigError(f"smtp.tls_cert = {str(cert_path)!r}: {exc}") from None
