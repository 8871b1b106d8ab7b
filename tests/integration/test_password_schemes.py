"""{ARGON2} and legacy {SSHA} passwords against the real slapd and Dovecot of the local stack."""

from __future__ import annotations

import imaplib
import subprocess

import ldap3
import pytest

from mailsvc import secret_store
from mailsvc.config import Settings
from mailsvc.stack import LocalStack, master_credentials
from provisioning.passwords import hash_password, ssha_hash, verify_password

pytestmark = pytest.mark.integration


def add_entry(settings: Settings, local: str, password_hash: str) -> tuple[str, str]:
    """Create a councillor holding ``password_hash`` as is; return its DN and address."""
    d = settings.directory
    address = f"{local}@{settings.domain}"
    dn = f"uid={local},{d.councillors_dn}"
    conn = ldap3.Connection(
        ldap3.Server(settings.ldap_url, get_info=ldap3.NONE),
        user=d.admin_dn,
        password=secret_store.admin_password(settings),
        auto_bind=True,
    )
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


def test_argon2_hash_has_the_form_slapd_verifies() -> None:
    hashed = hash_password("a-password-123456789")

    assert hashed.startswith("{ARGON2}$argon2id$v=19$m=32768,t=2,p=1$")
    assert verify_password("a-password-123456789", hashed)
    assert not verify_password("another-password-1234", hashed)


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
