"""stack.directory = "samba": the names derived from the domain, the settings' checks, the
Administrator password, smb.conf values and the LDAPS certificate (no Samba process here; the
real one runs in tests/integration/test_samba_stack.py)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from mailsvc import secret_store
from mailsvc.config import DEFAULT_CONFIG, SambaDirectory, load_settings
from mailsvc.errors import ConfigError
from mailsvc.stack import StackError, configs, samba
from mailsvc.stack.layout import Paths


def test_the_default_domain_gives_realm_netbios_domain_and_base_dn() -> None:
    settings = load_settings(DEFAULT_CONFIG, env={"MAILSVC_VAR_DIR": "/srv/m"})
    assert settings.stack.directory == "openldap"  # Samba only when asked for
    ad = settings.samba_directory
    assert ad.realm == "RADA.MIASTO.EXAMPLE"
    assert ad.netbios_domain == "RADA"
    assert ad.base_dn == "DC=rada,DC=miasto,DC=example"
    assert ad.url == "ldaps://127.0.3.89:636"
    assert ad.admin_dn == "CN=Administrator,CN=Users,DC=rada,DC=miasto,DC=example"
    assert ad.admin_principal == "Administrator@RADA.MIASTO.EXAMPLE"
    assert ad.ca_file == Path("/srv/m/samba-ca.pem")
    assert ad.samba_dir == Paths.of(Path("/srv/m")).samba_dir


@pytest.mark.parametrize(
    ("domain", "netbios"),
    [
        ("urzadmiastaprzykladowo.example.org", "URZADMIASTAPRZY"),  # cut to 15
        ("abcdefghijklmn-x.example", "ABCDEFGHIJKLMN"),  # no hyphen left at the end
        ("mailsvc-dc.example", "MAILSVC-DC"),
    ],
)
def test_the_netbios_domain_is_the_first_label_in_at_most_15_characters(
    domain: str, netbios: str
) -> None:
    ad = SambaDirectory.of(domain, "127.0.0.9", Path("/v"))
    assert ad.netbios_domain == netbios
    assert len(ad.netbios_domain) <= 15
    # Samba refuses a domain controller named like its domain.
    assert ad.dc_name != ad.netbios_domain


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILSVC_STACK__DIRECTORY": "ad"}, "stack.directory = 'ad': expected 'openldap'"),
        ({"MAILSVC_STACK__SAMBA_HOST": "::1"}, "expected an IPv4 loopback address"),
        ({"MAILSVC_STACK__SAMBA_HOST": "10.1.2.3"}, "expected an IPv4 loopback address"),
        ({"MAILSVC_STACK__SAMBA_HOST": "localhost"}, "expected an IPv4 loopback address"),
        ({"MAILSVC_STACK__PROVISION_TIMEOUT": "0"}, "stack.provision_timeout = 0.0"),
    ],
)
def test_samba_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(DEFAULT_CONFIG, env=env)


def test_samba_is_chosen_from_the_environment() -> None:
    env = {"MAILSVC_STACK__DIRECTORY": "samba", "MAILSVC_STACK__SAMBA_HOST": "127.0.0.77"}
    settings = load_settings(DEFAULT_CONFIG, env=env)
    assert settings.stack.directory == "samba"
    assert settings.samba_directory.url == "ldaps://127.0.0.77:636"


def test_the_generated_administrator_password_has_three_kinds_of_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first draws miss a kind, as a random draw sometimes does: they are drawn again.
    draws = iter(["abcdefghijkmnpqrstuv", "ABCDEFGHJKLMNPQRTUVW", "abcdefghijkmnpqrst34", "aB3"])
    monkeypatch.setattr(secret_store, "generate_password", lambda length: next(draws))
    settings = load_settings(DEFAULT_CONFIG, env={"MAILSVC_VAR_DIR": str(tmp_path)})
    assert secret_store.samba_admin_password(settings) == "aB3"
    path = secret_store.secret_path(settings, "samba-admin")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_store.samba_admin_password(settings) == "aB3"  # kept, not drawn again


def test_a_configured_administrator_password_wins(tmp_path: Path) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={"MAILSVC_VAR_DIR": str(tmp_path)})
    settings = settings.with_changes(directory={"admin_password": "Given-Pass-123"})
    assert secret_store.samba_admin_password(settings) == "Given-Pass-123"
    assert not secret_store.secret_path(settings, "samba-admin").exists()


@pytest.mark.parametrize("value", ["a b", "50%m", "line\\", "x\ny = z", ""])
def test_smb_conf_refuses_values_it_cannot_hold(value: str) -> None:
    with pytest.raises(StackError, match=r"stack\.samba_host"):
        configs.samba_value(value, "stack.samba_host")


def test_smb_conf_keeps_everything_under_var_dir() -> None:
    settings = load_settings(DEFAULT_CONFIG, env={"MAILSVC_VAR_DIR": "/srv/m"})
    text = configs.smb_conf(settings, Paths.of(Path("/srv/m")))
    paths = [
        line.split("=", 1)[1].strip()
        for line in text.splitlines()
        if line.strip().split("=")[0].strip().endswith(("dir", "directory", "file", "path"))
    ]
    assert len(paths) >= 12
    assert all(path.startswith("/srv/m/") for path in paths), paths


def certificate(paths: Paths) -> x509.Certificate:
    return x509.load_pem_x509_certificate(paths.samba_tls_cert.read_bytes())


def test_the_certificate_names_samba_host_and_is_made_again_for_another(tmp_path: Path) -> None:
    paths = Paths.of(tmp_path)
    paths.samba_tls_cert.parent.mkdir(parents=True)
    samba.ensure_certificate(paths, "127.0.3.89", "mailsvc-dc.rada.example")
    first = certificate(paths)
    names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.3.89")]
    assert names.get_values_for_type(x509.DNSName) == ["mailsvc-dc.rada.example"]
    assert stat.S_IMODE(paths.samba_tls_key.stat().st_mode) == 0o600  # Samba insists

    samba.ensure_certificate(paths, "127.0.3.89", "mailsvc-dc.rada.example")
    assert certificate(paths).serial_number == first.serial_number  # kept
    samba.ensure_certificate(paths, "127.0.3.90", "mailsvc-dc.rada.example")
    names = certificate(paths).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.3.90")]
