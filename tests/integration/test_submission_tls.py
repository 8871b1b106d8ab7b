"""TLS for real: submission with implicit TLS (submission.tls_port, RFC 8314), Mozilla's
intermediate settings on every TLS port, the MTA-STS policy on the web port, and a certificate
swapped on disk under a running `mailsvc serve` and SIGHUP'd."""

from __future__ import annotations

import asyncio
import email
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email import policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from mailsvc.app import Service
from mailsvc.config import Settings
from mailsvc.relay.dnsrecords import mta_sts_id, plan
from mailsvc.stack import free_ports
from tests.unit.test_server_tls import tls11_contexts, write_pair

from .conftest import wait_for_inbox
from .test_cli import cli_env
from .test_submission import _context, own_message

ROOT = Path(__file__).resolve().parents[2]
SERIAL_A, SERIAL_B = 0xA1, 0xB2


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """A configured certificate (RSA, as many certbot setups have), implicit TLS on a free
    port, and an MTA-STS policy in enforce mode."""
    cert, key = write_pair(tmp_path / "a", "mail-a.rada.example", SERIAL_A, rsa_key=True)
    (tls_port,) = free_ports(1)
    return settings.with_changes(
        smtp={"tls_cert": str(cert), "tls_key": str(key)},
        submission={"tls_port": tls_port},
        mta_sts={"mode": "enforce", "mx": "mail.rada.example, *.mx.rada.example"},
        delivery={"separate_process": False},  # not what is tested here: a quicker start
    )


def serial_of(der: bytes | None) -> int:
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str, int]:
    """Implicit TLS on ``port``: the protocol, the cipher and the certificate's serial."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as conn,
    ):
        version, cipher = conn.version(), conn.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0], serial_of(conn.getpeercert(binary_form=True))


def tls12(cipher: str) -> ssl.SSLContext:
    context = _context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    return context


def starttls(port: int, context: ssl.SSLContext) -> tuple[str, int]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("laptop.radny")
        client.starttls(context=context)
        sock: Any = client.sock
        return sock.cipher()[0], serial_of(sock.getpeercert(binary_form=True))


async def test_implicit_tls_submission_works_as_587_does(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Irena", "Szyfrowana")
    reader = await add_councillor("Jan", "Odbiorca")

    def send() -> tuple[str, int, str, int]:
        with smtplib.SMTP_SSL(
            "127.0.0.1", service.submission_tls_port, context=_context(), timeout=30
        ) as client:
            _, features = client.ehlo("laptop.radny")
            client.login(author.address, author.password)
            msg = own_message(author.address, reader.address, "Przez port 465")
            refused = client.send_message(msg, author.address, [reader.address])
            assert refused == {}
            # The same From check as on 587: another councillor's address is refused.
            spoof = own_message(reader.address, "mieszkaniec@example.org", "Podszyty")
            code = 0
            try:
                client.send_message(spoof, author.address, ["mieszkaniec@example.org"])
            except smtplib.SMTPDataError as exc:
                code = exc.smtp_code
            sock: Any = client.sock
            return features.decode(), code, sock.version(), serial_of(sock.getpeercert(True))

    features, spoof_code, version, serial = await asyncio.to_thread(send)
    assert "AUTH" in features and "STARTTLS" not in features  # TLS already: no STARTTLS
    assert spoof_code == 553
    assert (version, serial) == ("TLSv1.3", SERIAL_A)
    inbox = await wait_for_inbox(settings, reader.address, reader.password)
    assert len(inbox) == 1
    msg = email.message_from_bytes(inbox[0], policy=policy.default)
    ours = [h for h in msg.get_all("Received", []) if "(mailsvc)" in h]
    assert "using TLSv1.3" in ours[0] and f"authenticated sender: {author.address}" in ours[0]


@pytest.mark.no_database  # TLS handshakes only
async def test_intermediate_settings_on_every_tls_port_and_the_mta_sts_policy(
    service: Service, settings: Settings, tmp_path: Path
) -> None:
    tls_port = service.submission_tls_port

    def probe() -> None:
        tls11, _ = tls11_contexts(tmp_path)  # that it can speak TLS 1.1: the unit test
        with pytest.raises(ssl.SSLError):
            handshake(tls_port, tls11)
        version, cipher, _ = handshake(tls_port, tls12("ECDHE-RSA-AES128-GCM-SHA256"))
        assert (version, cipher) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
        assert handshake(tls_port, tls12("ECDHE-RSA-CHACHA20-POLY1305"))[1] == (
            "ECDHE-RSA-CHACHA20-POLY1305"
        )
        # No forward secrecy; CBC (which Python's own default would take): refused.
        for weak in ("AES128-SHA", "ECDHE-RSA-AES128-SHA256"):
            with pytest.raises(ssl.SSLError):
                handshake(tls_port, tls12(weak))
        # STARTTLS on 25 and 587: the same settings, the same certificate.
        for port in (service.smtp_port, service.submission_port):
            assert starttls(port, tls12("ECDHE-RSA-AES256-GCM-SHA384")) == (
                "ECDHE-RSA-AES256-GCM-SHA384",
                SERIAL_A,
            )
            with pytest.raises(ssl.SSLError):
                starttls(port, tls12("AES128-SHA"))
        # Another real client: openssl s_client, STARTTLS on 587 offering TLS 1.1 only.
        command = ["openssl", "s_client", "-starttls", "smtp", "-tls1_1"]
        command += [
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-connect",
            f"127.0.0.1:{service.submission_port}",
        ]
        old = subprocess.run(command, input=b"", capture_output=True, timeout=20, check=False)
        assert old.returncode != 0 and b"Cipher is (NONE)" in old.stdout

    await asyncio.to_thread(probe)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.web_port}") as web:
        response = await web.get("/.well-known/mta-sts.txt")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == (
        b"version: STSv1\r\nmode: enforce\r\nmx: mail.rada.example\r\n"
        b"mx: *.mx.rada.example\r\nmax_age: 604800\r\n"
    )
    # `mailsvc dns` names exactly this text in the _mta-sts record's id.
    (record,) = [r for r in plan(settings, {}).records if r.purpose == "mta_sts"]
    assert record.value == f"v=STSv1; id={mta_sts_id(response.text)}"


def install(pair: tuple[Path, Path], cert: Path, key: Path) -> None:
    """Put a pair in place as certbot does: new files renamed over the old names."""
    for source, target in zip(pair, (cert, key), strict=True):
        shutil.copyfile(source, target.with_suffix(".new"))
        target.with_suffix(".new").replace(target)


@pytest.fixture
def serve_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "serve.log"
    yield log
    if log.exists():
        print(log.read_text()[-4000:])  # shown when the test fails


@pytest.mark.no_database  # TLS handshakes only
async def test_a_certificate_swapped_and_sighupped_is_served_to_the_next_connection(
    settings: Settings, add_councillor: Callable[..., Any], tmp_path: Path, serve_log: Path
) -> None:
    author = await add_councillor("Henryk", "Odnowiony")
    reader = await add_councillor("Zofia", "Czekająca")
    first = write_pair(tmp_path / "a", "mail-a.rada.example", SERIAL_A, rsa_key=True)
    second = write_pair(tmp_path / "b", "mail-b.rada.example", SERIAL_B, rsa_key=True)
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "fullchain.pem", live / "privkey.pem"
    install(first, cert, key)
    smtp_port, sub_port, tls_port, web_port = free_ports(4)
    env = cli_env(
        settings,
        MAILSVC_SMTP__PORT=str(smtp_port),
        MAILSVC_SMTP__TLS_CERT=str(cert),
        MAILSVC_SMTP__TLS_KEY=str(key),
        MAILSVC_SMTP__AUTHENTICATION_CHECKS="false",
        MAILSVC_SUBMISSION__PORT=str(sub_port),
        MAILSVC_SUBMISSION__TLS_PORT=str(tls_port),
        MAILSVC_WEB__PORT=str(web_port),
        MAILSVC_RELAY__ACKNOWLEDGE="false",
        MAILSVC_DELIVERY__SEPARATE_PROCESS="false",
    )
    with serve_log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailsvc.cli", "serve", env=env, cwd=ROOT, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.returncode is None, "mailsvc serve stopped"
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mailsvc serve did not come up"
                await asyncio.sleep(0.05)
        # MTA-STS is off in the embedded default: no policy.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}") as web:
            assert (await web.get("/.well-known/mta-sts.txt")).status_code == 404

        # Opened before the swap: one session mid-message on 465, one not yet in TLS on 25.
        early = smtplib.SMTP_SSL("127.0.0.1", tls_port, context=_context(), timeout=30)
        early.ehlo("laptop.radny")
        early.login(author.address, author.password)
        assert early.mail(author.address)[0] == 250
        assert early.rcpt(reader.address)[0] == 250
        early_sock: Any = early.sock
        assert serial_of(early_sock.getpeercert(True)) == SERIAL_A
        plain = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
        plain.ehlo("resident.example.org")

        install(second, cert, key)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while handshake(tls_port, _context())[2] != SERIAL_B:
            assert time.monotonic() < deadline, "the new certificate was not served"
            await asyncio.sleep(0.05)
        assert proc.returncode is None  # SIGHUP did not end the process
        plain.starttls(context=_context())  # the next handshake, on an older connection
        plain_sock: Any = plain.sock
        assert serial_of(plain_sock.getpeercert(True)) == SERIAL_B
        plain.quit()

        # The session that began with the old certificate finishes its message.
        msg = own_message(author.address, reader.address, "Started before the renewal")
        assert early.data(msg.as_bytes())[0] == 250
        assert serial_of(early_sock.getpeercert(True)) == SERIAL_A
        early.quit()
        inbox = await wait_for_inbox(settings, reader.address, reader.password)
        assert b"Subject: Started before the renewal" in inbox[0]

        # A key that does not match (a half-done renewal): the error names it, B stays.
        shutil.copyfile(first[1], key)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while f"the key file {key} does not belong" not in await asyncio.to_thread(
            serve_log.read_text
        ):
            assert time.monotonic() < deadline, "no error logged for the wrong key"
            await asyncio.sleep(0.05)
        assert handshake(tls_port, _context())[2] == SERIAL_B
        assert proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
