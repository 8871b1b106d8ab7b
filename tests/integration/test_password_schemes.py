"""{ARGON2} and legacy {SSHA} passwords against the real slapd and Dovecot of the local stack."""

from __future__ import annotations

import imaplib
import subprocess
import threading
from pathlib import Path

import ldap3
import pytest

from mailsvc import secret_store
from mailsvc.app import open_parts
from mailsvc.cli.councillors import run_import
from mailsvc.config import Settings
from mailsvc.stack import LocalStack, master_credentials
from mailsvc.storage.register import os_audit_context
from provisioning import passwords
from provisioning.directory import Directory
from provisioning.passwords import Argon2Params, hash_password, ssha_hash

from .test_provisioning import ROW_NOWAK, ROW_ZOLC, roster

pytestmark = [pytest.mark.integration, pytest.mark.no_database]  # slapd's hashes, binds, IMAP


def admin_connection(settings: Settings) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(settings.ldap_url, get_info=ldap3.NONE),
        user=settings.directory.admin_dn,
        password=secret_store.admin_password(settings),
        auto_bind=True,
    )


def stored_hash(settings: Settings, dn: str) -> str:
    """The ``userPassword`` slapd holds for ``dn`` (read as the admin; the service never does)."""
    conn = admin_connection(settings)
    try:
        assert conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userPassword"])
        (value,) = conn.entries[0].entry_attributes_as_dict["userPassword"]
        return value.decode("ascii") if isinstance(value, bytes) else str(value)
    finally:
        conn.unbind()


def add_entry(settings: Settings, local: str, password_hash: str) -> tuple[str, str]:
    """Create a councillor holding ``password_hash`` as is; return its DN and address."""
    d = settings.directory
    address = f"{local}@{settings.domain}"
    dn = f"uid={local},{d.councillors_dn}"
    conn = admin_connection(settings)
    try:
        attributes = {
            "cn": local,
            "sn": local,
            "uid": local,
            d.mail_attribute: address,
            "userPassword": password_hash,
        }
        assert conn.add(dn, [d.person_object_class], attributes), conn.result
    finally:
        conn.unbind()
    return dn, address


def ldapwhoami(settings: Settings, dn: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ldapwhoami", "-x", "-H", settings.ldap_url, "-D", dn, "-w", password],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def imap_login(settings: Settings, user: str, password: str) -> None:
    with imaplib.IMAP4(settings.stack.host, settings.stack.imap_port, timeout=10) as imap:
        imap.login(user, password)


@pytest.mark.parametrize("scheme", ["argon2", "ssha"])
def test_bind_and_imap_login_with_either_scheme(local_stack: LocalStack, scheme: str) -> None:
    settings = local_stack.settings
    password = f"{scheme}-password-123456"
    hashed = hash_password(password) if scheme == "argon2" else ssha_hash(password)
    dn, address = add_entry(settings, f"scheme.{scheme}", hashed)

    ok = ldapwhoami(settings, dn, password)
    assert ok.returncode == 0, ok.stderr
    assert dn.lower() in ok.stdout.lower()
    wrong = ldapwhoami(settings, dn, "wrong-password-123456")
    assert wrong.returncode == 49, wrong.stderr  # invalidCredentials

    imap_login(settings, address, password)
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(settings, address, "wrong-password-123456")


def test_the_stack_hashes_its_own_entries_with_argon2(local_stack: LocalStack) -> None:
    settings = local_stack.settings
    slapd_conf = local_stack.paths.slapd_conf.read_text(encoding="utf-8")
    assert "moduleload argon2" in slapd_conf
    assert "rootpw {ARGON2}$argon2id$" in slapd_conf
    # The reader entry (synchronised at start) and the admin both bind with their passwords.
    d = settings.directory
    assert ldapwhoami(settings, d.reader_dn, secret_store.reader_password(settings)).returncode == 0
    assert ldapwhoami(settings, d.admin_dn, secret_store.admin_password(settings)).returncode == 0
    # The master user still opens a mailbox (its file keeps a fast hash of a random secret).
    _, address = add_entry(settings, "scheme.master", hash_password("master-test-1234567"))
    imap_login(settings, *master_credentials(settings, address))


async def test_a_reset_replaces_an_ssha_hash_with_argon2(
    settings: Settings, directory: Directory
) -> None:
    old = "old-ssha-password-123"
    dn, address = add_entry(settings, "scheme.reset", ssha_hash(old))
    assert ldapwhoami(settings, dn, old).returncode == 0

    async with open_parts(settings) as parts:
        account = await parts.councillors().reset_password(address, os_audit_context("pytest"))

    assert stored_hash(settings, dn).startswith("{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$")
    assert ldapwhoami(settings, dn, account.password).returncode == 0
    assert ldapwhoami(settings, dn, old).returncode == 49


async def test_import_and_reset_hash_off_the_loop_with_the_configured_cost(
    settings: Settings, directory: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    custom = settings.with_changes(
        provisioning={"argon2_memory_kib": 8192, "argon2_time_cost": 3, "send_welcome": False}
    )
    threads: list[int] = []
    real = passwords.hash_password

    def recording(password: str, params: Argon2Params) -> str:
        threads.append(threading.get_ident())
        return real(password, params)

    monkeypatch.setattr(passwords, "hash_password", recording)
    async with open_parts(custom) as parts:
        _, result, _, _ = await run_import(parts, roster(tmp_path, ROW_ZOLC, ROW_NOWAK), quiet=True)
        assert result is not None and not result.errors and len(result.created) == 2
        first = result.created[0]
        reset = await parts.councillors().reset_password(
            result.created[1].address, os_audit_context("pytest")
        )

    assert len(threads) == 3 and threading.get_ident() not in threads
    for account, password in ((first, first.password), (result.created[1], reset.password)):
        assert stored_hash(custom, account.dn).startswith("{ARGON2}$argon2id$v=19$m=8192,t=3,p=1$")
        ok = ldapwhoami(custom, account.dn, password)
        assert ok.returncode == 0, ok.stderr
