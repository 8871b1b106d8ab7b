"""TLS to the directory, on real servers: ldaps:// and ldap:// with StartTLS
(directory.starttls), a self-signed certificate trusted through directory.ca_file, for the
adapter (ldap3), bulk additions (ldapwire) and Dovecot alike; refused without it, and a
directory that offers no StartTLS a clear error, never clear text.

A second slapd serves a copy of the session's directory with a certificate made for the test:
over ldaps://, or over ldap:// with ``security tls=1``, so that slapd itself refuses a bind
without StartTLS (a test that passes there did use TLS). The session's own slapd is not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailsvc import secret_store
from mailsvc.app import directory_config, open_parts, start_service
from mailsvc.cli.councillors import run_import
from mailsvc.config import Settings
from mailsvc.mailbox import MailboxFailure, MailboxLoginFailed, read_inbox
from mailsvc.relay.smtp.tls import ensure_self_signed
from mailsvc.stack import LocalStack, free_ports
from provisioning.directory import Directory, DirectoryError, DirectoryUnavailable
from provisioning.passwords import hash_password

from .conftest import make_message, service_database_url, smtp_send, wait_for_inbox
from .test_provisioning import ROW_ZOLC, roster


@contextlib.contextmanager
def tls_slapd(
    settings: Settings, tmp_path: Path, listen: str, cert: Path, key: Path, *, require: bool
) -> Iterator[int]:
    """A second slapd with a copy of the session's directory and TLS with ``cert``, listening
    on ``listen`` ("ldaps" or "ldap") on a free port; ``require``: slapd itself refuses any
    operation but StartTLS in clear text (``security tls=1``). Yields the port."""
    ldap_dir = settings.var_dir / "ldap"
    data = tmp_path / f"data-{listen}"
    shutil.copytree(ldap_dir / "data", data, ignore=shutil.ignore_patterns("lock.mdb"))
    conf = (ldap_dir / "slapd.conf").read_text()
    conf = conf.replace(f'"{ldap_dir / "data"}"', f'"{data}"').replace(
        str(ldap_dir / "data"), str(data)
    )
    tls = f'TLSCertificateFile "{cert}"\nTLSCertificateKeyFile "{key}"\n'
    if require:
        tls += "security tls=1\n"
    conf = conf.replace("database mdb", tls + "\ndatabase mdb", 1)
    conf_path = tmp_path / f"slapd-{listen}.conf"
    conf_path.write_text(conf)
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [
            settings.stack.slapd,
            "-f",
            str(conf_path),
            "-h",
            f"{listen}://127.0.0.1:{port}/",
            "-d",
            "none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"{listen} slapd did not come up"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def ldaps(stack_settings: Settings, local_stack: LocalStack, tmp_path: Path) -> Iterator[Any]:
    cert, key = ensure_self_signed(tmp_path / "tls", "localhost")
    with tls_slapd(stack_settings, tmp_path, "ldaps", cert, key, require=False) as port:
        yield f"ldaps://localhost:{port}", cert


def directory_at(
    settings: Settings, url: str, ca_file: str, *, starttls: bool = False, reader: bool = False
) -> Directory:
    config = replace(directory_config(settings), url=url, ca_file=ca_file, starttls=starttls)
    if reader:  # as RCPT lookups bind
        config = replace(
            config,
            bind_dn=settings.directory.reader_dn,
            bind_password=secret_store.reader_password(settings),
        )
    return Directory(config)


@pytest.mark.no_database  # the directory only
async def test_a_self_signed_directory_is_trusted_through_its_ca_file(
    stack_settings: Settings, ldaps: Any
) -> None:
    url, cert = ldaps
    directory = directory_at(stack_settings, url, str(cert))
    try:
        # The adapter's own reads (ldap3) ...
        assert await directory.find_by_address(f"nikt@{stack_settings.domain}") is None
        # ... and a bulk addition (ldapwire), on the same verified footing.
        request = directory.councillor_request(
            local_part="tls.test",
            address=f"tls.test@{stack_settings.domain}",
            given_name="Tomasz",
            surname="Szyfrowany",
            password="x",
            password_hash="{SSHA}x",
        )
        (result,) = await directory.add_many([request])
        assert not isinstance(result, Exception), result
        found = await directory.find_by_address(f"tls.test@{stack_settings.domain}")
        assert found is not None and found.dn == result
    finally:
        await directory.close()


@pytest.mark.no_database  # the directory only
async def test_without_its_ca_file_the_self_signed_directory_is_refused(
    stack_settings: Settings, ldaps: Any
) -> None:
    url, _cert = ldaps
    directory = directory_at(stack_settings, url, "")
    try:
        # ldap3 alone would accept any certificate; the adapter verifies it.
        with pytest.raises(DirectoryUnavailable):
            await directory.find_by_address(f"nikt@{stack_settings.domain}")
        request = directory.councillor_request(
            local_part="tls.refused",
            address=f"tls.refused@{stack_settings.domain}",
            given_name="Anna",
            surname="Odrzucona",
            password="x",
            password_hash="{SSHA}x",
        )
        results = await asyncio.wait_for(directory.add_many([request]), 30)
        assert len(results) == 1 and isinstance(results[0], Exception)
        assert "certificate" in str(results[0]).lower() or "tls" in str(results[0]).lower()
    finally:
        await directory.close()


# --- ldap:// with StartTLS, and Dovecot over TLS ------------------------------------------------


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory Dovecot's auth process can read: run by root, it reads the CA file as the
    user dovecot, and pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix="ca", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103 - the key in it stays 0600
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def council_slapd(
    settings: Settings, tmp_path: Path, cert_dir: Path, listen: str
) -> Iterator[tuple[str, Path]]:
    """``listen``://127.0.0.1:port of a slapd that requires TLS, and its certificate.

    An address, not localhost: Dovecot's LDAP library checks a certificate for "localhost"
    against the machine's host name instead."""
    cert, key = ensure_self_signed(cert_dir, "127.0.0.1")
    os.chmod(cert, 0o644)
    with tls_slapd(settings, tmp_path, listen, cert, key, require=True) as port:
        yield f"{listen}://127.0.0.1:{port}", cert


@pytest.fixture
def starttls(
    stack_settings: Settings, local_stack: LocalStack, tmp_path: Path, readable_dir: Path
) -> Iterator[tuple[str, Path]]:
    """ldap://127.0.0.1:port of a slapd that requires StartTLS, and its certificate."""
    with council_slapd(stack_settings, tmp_path, readable_dir, "ldap") as found:
        yield found


def other_ca(directory: Path) -> Path:
    """A self-signed certificate for the same address that did not sign the directory's."""
    directory.mkdir(mode=0o755, exist_ok=True)
    cert, _ = ensure_self_signed(directory, "127.0.0.1")
    os.chmod(cert, 0o644)
    return cert


def add_request(directory: Directory, settings: Settings, local: str) -> Any:
    return directory.councillor_request(
        local_part=local,
        address=f"{local}@{settings.domain}",
        given_name="Tomasz",
        surname="Szyfrowany",
        password="x",
        password_hash="{SSHA}x",
    )


@pytest.mark.no_database  # the directory only
async def test_slapd_itself_refuses_a_bind_without_starttls(
    stack_settings: Settings, starttls: tuple[str, Path]
) -> None:
    # What makes the tests below prove something: without StartTLS nothing gets through.
    url, cert = starttls
    directory = directory_at(stack_settings, url, str(cert))
    try:
        with pytest.raises(DirectoryError, match=r"accepts binds only over TLS"):
            await directory.find_by_address(f"nikt@{stack_settings.domain}")
        with pytest.raises(DirectoryError, match=r"accepts binds only over TLS"):
            await directory.add_many([add_request(directory, stack_settings, "plain.text")])
    finally:
        await directory.close()


@pytest.mark.no_database  # the directory only
async def test_with_starttls_reads_writes_and_password_checks_work(
    stack_settings: Settings, starttls: tuple[str, Path]
) -> None:
    url, cert = starttls
    directory = directory_at(stack_settings, url, str(cert), starttls=True)
    reader = directory_at(stack_settings, url, str(cert), starttls=True, reader=True)
    address = f"starttls.test@{stack_settings.domain}"
    try:
        assert await directory.find_by_address(address) is None  # ldap3
        (dn,) = await directory.add_many([add_request(directory, stack_settings, "starttls.test")])
        assert isinstance(dn, str), dn  # ldapwire
        await directory.set_password(dn, "Tajne-Haslo-1", hash_password("Tajne-Haslo-1"))
        found = await reader.find_recipient(address)  # as RCPT lookups do
        assert found is not None and found.active
        assert await directory.authenticate(address, "Tajne-Haslo-1") is not None  # bind_as
        assert await directory.authenticate(address, "zle") is None
    finally:
        await directory.close()
        await reader.close()


@pytest.mark.no_database  # the directory only
async def test_a_certificate_from_another_ca_is_a_clear_error(
    stack_settings: Settings, starttls: tuple[str, Path], tmp_path: Path
) -> None:
    url, _cert = starttls
    directory = directory_at(stack_settings, url, str(other_ca(tmp_path / "other")), starttls=True)
    try:
        with pytest.raises(DirectoryUnavailable, match=r"TLS handshake failed.*certificate"):
            await directory.find_by_address(f"nikt@{stack_settings.domain}")
        with pytest.raises(DirectoryUnavailable, match=r"TLS handshake failed.*certificate"):
            await directory.authenticate(f"nikt@{stack_settings.domain}", "x")
        (result,) = await asyncio.wait_for(
            directory.add_many([add_request(directory, stack_settings, "wrong.ca")]), 30
        )
        assert isinstance(result, DirectoryUnavailable)
        assert "TLS handshake failed" in str(result) and "certificate" in str(result)
    finally:
        await directory.close()


@pytest.mark.no_database  # the directory only
async def test_a_directory_without_starttls_is_a_clear_error(
    stack_settings: Settings, local_stack: LocalStack
) -> None:
    # The session's slapd has no TLS at all.
    directory = directory_at(stack_settings, stack_settings.ldap_url, "", starttls=True)
    try:
        with pytest.raises(DirectoryUnavailable, match=r"refused StartTLS.*use ldaps://"):
            await directory.find_by_address(f"nikt@{stack_settings.domain}")
        (result,) = await directory.add_many(
            [add_request(directory, stack_settings, "no.starttls")]
        )
        assert isinstance(result, DirectoryUnavailable)
        assert "refused StartTLS" in str(result)
    finally:
        await directory.close()


def remote_directory_settings(
    base: Settings, session: Settings, url: str, ca_file: Path, tmp_path: Path
) -> Settings:
    """A private stack and service whose directory is the TLS slapd at ``url`` (as a council's
    own directory would be; StartTLS on ldap://), with the session's directory passwords."""
    return base.with_changes(
        directory={
            "url": url,
            "starttls": url.startswith("ldap://"),
            "ca_file": str(ca_file),
            "admin_password": secret_store.admin_password(session),
            "reader_password": secret_store.reader_password(session),
        },
        smtp={"port": 0, "directory_cache_seconds": 0.0, "authentication_checks": False},
        submission={"port": 0},
        database={"url": service_database_url(tmp_path)},
        delivery={"retry_initial": 0.3, "retry_max_interval": 1.0, "workers": 2},
        relay={"acknowledge": False},
        web={"port": 0},
        distribution={"sync_interval": 0.5, "imap_check_interval": 0.0, "reminders": ""},
    )


@pytest.mark.parametrize("scheme", ["ldap", "ldaps"])  # ldap: with StartTLS
async def test_import_rcpt_delivery_and_imap_login_work_over_tls(
    scheme: str,
    stack_settings: Settings,
    local_stack: LocalStack,
    new_stack_settings: Callable[[], Settings],
    readable_dir: Path,
    tmp_path: Path,
) -> None:
    with council_slapd(stack_settings, tmp_path, readable_dir, scheme) as (url, cert):
        await import_rcpt_delivery_and_imap_login(
            remote_directory_settings(new_stack_settings(), stack_settings, url, cert, tmp_path),
            readable_dir,
        )


async def import_rcpt_delivery_and_imap_login(settings: Settings, readable_dir: Path) -> None:
    stack = LocalStack(settings)
    await asyncio.to_thread(stack.up)  # its Dovecot looks councillors up in the TLS slapd
    conf = stack.paths.dovecot_ldap_conf.read_text()
    assert ("\ntls = yes\n" in conf) is settings.directory.starttls
    assert f'\ntls_ca_cert_file = "{settings.directory.ca_file}"\n' in conf

    # A roster import: entries added over ldapwire, groups and checks over ldap3.
    async with open_parts(settings) as parts:
        _, result, _, _ = await run_import(parts, roster(readable_dir, ROW_ZOLC), quiet=True)
        assert result is not None and not result.errors and len(result.created) == 1
        account = result.created[0]
        # The welcome message: Dovecot's LMTP finds the user (userdb) through TLS.
        await parts.deliver_queued()

    service = await start_service(settings)
    try:
        # RCPT: the relay's reader lookup through TLS.
        msg = make_message(account.address, "Przez TLS")
        assert await smtp_send(service.smtp_port, [account.address], msg) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as unknown:
            await smtp_send(
                service.smtp_port, [f"nikt.taki@{settings.domain}"], make_message("x", "x")
            )
        assert unknown.value.recipients[f"nikt.taki@{settings.domain}"][0] == 550
        # IMAP login: Dovecot's passdb binds as the councillor through TLS.
        inbox = await wait_for_inbox(settings, account.address, account.password, count=2)
        assert len(inbox) == 2 and any(b"Przez TLS" in m for m in inbox)
        host, port = settings.stack.host, settings.stack.imap_port
        with pytest.raises(MailboxLoginFailed) as refused_login:
            await read_inbox(host, port, account.address, "zle-haslo")
        assert refused_login.value.failure is MailboxFailure.LOGIN_REFUSED
    finally:
        await service.stop()

    # Dovecot given a CA that did not sign the directory's certificate: no login (a bind in
    # clear text would be refused by slapd anyway), and its log says why.
    await asyncio.to_thread(stack.stop_service, "dovecot")
    wrong = settings.with_changes(directory={"ca_file": str(other_ca(readable_dir / "other"))})
    await asyncio.to_thread(LocalStack(wrong).start_service, "dovecot")
    with pytest.raises(MailboxLoginFailed) as unavailable:
        await read_inbox(host, port, account.address, account.password)
    assert unavailable.value.failure is MailboxFailure.LOGIN_UNAVAILABLE
    log = stack.paths.log("dovecot").read_text()
    if settings.directory.starttls:
        assert "ldap_start_tls_s() failed" in log
    else:
        assert f"Can't connect to server: {settings.directory.url}" in log
