"""The servers' TLS context (Mozilla intermediate) and its reload, handshakes in memory.

The handshakes against the running servers (implicit TLS, STARTTLS, SIGHUP to `mailsvc serve`)
are in tests/integration/test_submission_tls.py.
"""

from __future__ import annotations

import datetime
import logging
import ssl
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mailsvc.relay.smtp.tls import (
    INTERMEDIATE_CIPHERS,
    ServerTls,
    TlsFileError,
    intermediate_context,
    load_pair,
)


def write_pair(
    directory: Path, name: str, serial: int, *, rsa_key: bool = False
) -> tuple[Path, Path]:
    """A self-signed certificate (EC P-256, or RSA 2048) with this CN and serial, and its key,
    as PEM files named after the CN."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(65537, 2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A full handshake between the two contexts in memory; the client's side, or SSLError.
    The client sends no server name (SNI), as many SMTP clients do not."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_side=False)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    for _ in range(10):
        for side, done in ((client_side, client_done), (server_side, server_done)):
            if not done:
                try:
                    side.do_handshake()
                    if side is client_side:
                        client_done = True
                    else:
                        server_done = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if client_done and server_done:
            return client_side
    raise AssertionError("the handshake did not finish")


def client_context(**limits: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, version in limits.items():
        setattr(context, name, version)
    return context


def tls11_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A client that offers only TLS 1.1, and a server of old that accepts it and the weak
    ciphers (OpenSSL's security level 0); Python warns about setting TLS 1.1 at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = client_context(
            minimum_version=ssl.TLSVersion.TLSv1_1, maximum_version=ssl.TLSVersion.TLSv1_1
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(*write_pair(tmp_path / "old", "old.example.org", 1, rsa_key=True))
    return client, server


def serial(conn: ssl.SSLObject) -> int:
    der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_the_context_follows_mozilla_intermediate() -> None:
    context = intermediate_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == INTERMEDIATE_CIPHERS.split(":")
    assert all(("ECDHE" in c and ("GCM" in c or "CHACHA20" in c)) for c in tls12)
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE  # Python's default is on
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_TICKET


def test_a_new_pair_is_served_to_the_next_handshake_and_a_bad_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = tmp_path / "live"
    first = write_pair(tmp_path / "a", "mail-a.example.org", 0xA1)
    second = write_pair(tmp_path / "b", "mail-b.example.org", 0xB2)
    live.mkdir()
    cert, key = live / "fullchain.pem", live / "privkey.pem"
    cert.write_bytes(first[0].read_bytes())
    key.write_bytes(first[1].read_bytes())
    tls = ServerTls(cert, key)
    client = client_context()
    assert serial(handshake(tls.context, client)) == 0xA1

    cert.write_bytes(second[0].read_bytes())
    key.write_bytes(second[1].read_bytes())
    assert serial(handshake(tls.context, client)) == 0xA1  # read only on reload
    assert tls.reload()
    assert serial(handshake(tls.context, client)) == 0xB2

    # A key that does not belong to the certificate (a half-finished copy): kept as it was.
    key.write_bytes(first[1].read_bytes())
    with caplog.at_level(logging.ERROR, logger="mailsvc.relay.smtp.tls"):
        assert not tls.reload()
    assert str(key) in caplog.text and "does not belong" in caplog.text
    assert serial(handshake(tls.context, client)) == 0xB2


def test_each_wrong_file_is_named(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, "mail.example.org", 7)
    missing = tmp_path / "missing.pem"
    with pytest.raises(TlsFileError, match=f"certificate file {missing}"):
        load_pair(missing, key)
    with pytest.raises(TlsFileError, match=f"key file {missing}"):
        load_pair(cert, missing)
    with pytest.raises(TlsFileError, match=f"no PEM certificate in the certificate file {key}"):
        load_pair(key, key)
    encrypted = tmp_path / "encrypted.key"
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsFileError, match=f"private key in the key file {encrypted}"):
        load_pair(cert, encrypted)
    context, loaded = load_pair(cert, key)
    assert loaded.serial_number == 7 and isinstance(context, ssl.SSLContext)


def test_old_protocols_and_ciphers_without_forward_secrecy_or_aead_are_refused(
    tmp_path: Path,
) -> None:
    # RSA: the one key type with which a cipher without forward secrecy (RSA key exchange,
    # AES128-SHA) could be chosen at all.
    tls = ServerTls(*write_pair(tmp_path, "mail.example.org", 9, rsa_key=True))
    tls11, old = tls11_contexts(tmp_path)
    # The client can speak TLS 1.1 (to a server that allows it), so the refusal is ours.
    assert handshake(old, tls11).version() == "TLSv1.1"
    with pytest.raises(ssl.SSLError):
        handshake(tls.context, tls11)
    # No forward secrecy; and CBC, which Python's own server default would still accept.
    for cipher in ("AES128-SHA", "ECDHE-RSA-AES128-SHA256"):
        weak = client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        weak.set_ciphers(cipher)
        assert handshake(old, weak).cipher()[0] == cipher  # possible, but not with us
        with pytest.raises(ssl.SSLError):
            handshake(tls.context, weak)
    good = client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    good.set_ciphers("ECDHE-RSA-CHACHA20-POLY1305")
    conn = handshake(tls.context, good)
    assert (conn.version(), conn.cipher()[0]) == ("TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305")
