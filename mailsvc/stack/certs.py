"""The self-signed certificate of the embedded Dovecot's IMAPS listener (``stack.imaps_port``),
made once and again when ``stack.host`` changes; it is also the CA file a client trusts."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509

from mailsvc.relay.smtp.tls import self_signed_pair
from mailsvc.stack.layout import write_atomic

_CERT_DAYS = 3650


def ensure_certificate(cert_path: Path, key_path: Path, host: str) -> None:
    """A certificate for ``host`` (an address: an IP entry; a name: a DNS entry) and its key."""
    try:
        name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        name = x509.DNSName(host)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if list(names) == [name] and key_path.exists():
            return
    except (FileNotFoundError, ValueError, x509.ExtensionNotFound):
        pass
    cert_path.parent.mkdir(mode=0o755, exist_ok=True)
    key_pem, cert_pem = self_signed_pair(host, [name], days=_CERT_DAYS)
    # Read by Dovecot's config process, which runs as the user who starts the stack (or root).
    write_atomic(key_path, key_pem.decode("ascii"), 0o600)
    write_atomic(cert_path, cert_pem.decode("ascii"), 0o644)
