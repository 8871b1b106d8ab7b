"""What differs between OpenLDAP and Active Directory, as pure functions (the adapter's I/O is
tested against slapd and Samba's AD DC in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.config.settings import AD_DEFAULTS, DirectorySettings, effective_directory
from mailsvc.errors import ConfigError
from mailsvc.stack.samba import delegation_aces, sid_text
from provisioning.directory import DirectoryConfig
from provisioning.directory.dialect import (
    AD_DISABLED,
    AD_ENABLED,
    AdDialect,
    Dialect,
    dialect_for,
    sam_account_name,
    unicode_pwd,
)
from provisioning.directory.entries import councillor_dn, staff_filter


def config(kind: str) -> DirectoryConfig:
    return DirectoryConfig(
        url="ldaps://dc.example:636",
        base_dn="DC=rada,DC=example",
        bind_dn="CN=svc,CN=Users,DC=rada,DC=example",
        bind_password="x",
        councillors_dn="OU=councillors,DC=rada,DC=example",
        groups_dn="OU=groups,DC=rada,DC=example",
        staff_dn="OU=staff,DC=rada,DC=example",
        kind=kind,
    )


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("jan.kowalski", "jan.kowalski"),
        ("a" * 20, "a" * 20),
        # Longer than 20: 15 characters, "-" and 4 hex digits of the local part's SHA-1.
        ("maria.konopnicka-wisniewska", "maria.konopnick-"),
    ],
)
def test_account_names_fit_active_directory(local: str, expected: str) -> None:
    name = sam_account_name(local)
    assert len(name) <= 20
    if len(local) <= 20:
        assert name == expected
    else:
        assert name.startswith(expected) and len(name) == 20
        assert all(c in "0123456789abcdef" for c in name[len(expected) :])


def test_long_local_parts_sharing_their_start_get_different_account_names() -> None:
    first = sam_account_name("maria.konopnicka-wisniewska")
    second = sam_account_name("maria.konopnicka-wisniewska2")
    assert first != second and len(first) == len(second) == 20


def test_forbidden_characters_never_reach_an_account_name() -> None:
    name = sam_account_name("a+b=c")
    assert not set(name) & set('"/\\[]:;|=,+*?<>@') and len(name) <= 20


def test_unicode_pwd_is_the_quoted_password_in_utf16le() -> None:
    assert unicode_pwd("Ab1ż") == '"Ab1ż"'.encode("utf-16-le")


def test_active_directory_reads_the_disabled_bit_of_user_account_control() -> None:
    ad = AdDialect(config("ad"))
    assert ad.is_active({"userAccountControl": [str(AD_ENABLED)]})
    assert ad.is_active({"userAccountControl": "512"})
    assert not ad.is_active({"userAccountControl": [str(AD_DISABLED)]})
    assert not ad.is_active({"userAccountControl": ["514"]})
    assert not ad.is_active({})  # unknown: never taken for enabled
    assert ad.status_change(False) == {"userAccountControl": [str(AD_DISABLED)]}
    assert ad.active_filter() == "(!(userAccountControl:1.2.840.113556.1.4.803:=2))"


def test_openldap_keeps_its_status_attribute() -> None:
    ldap = Dialect(config("openldap"))
    assert ldap.is_active({"employeeType": ["active"]})
    assert not ldap.is_active({"employeeType": ["disabled"]})
    assert ldap.status_change(True) == {"employeeType": ["active"]}


def test_active_directory_gets_the_password_in_clear_openldap_its_hash() -> None:
    ad = AdDialect(config("ad"))
    attrs = ad.person_attributes(
        login="jan.nowak", address="jan.nowak@rada.example", password="Pw-1", password_hash=None
    )
    assert attrs["unicodePwd"] == unicode_pwd("Pw-1")
    assert attrs["userPrincipalName"] == "jan.nowak@rada.example"
    assert attrs["sAMAccountName"] == "jan.nowak"
    assert "userPassword" not in attrs
    ldap = Dialect(config("openldap"))
    with pytest.raises(ValueError, match="hash"):
        ldap.person_attributes(login="x", address=None, password="p", password_hash=None)
    made = ldap.person_attributes(login="x", address=None, password="p", password_hash="{X}h")
    assert made["userPassword"] == "{X}h" and "p" not in made.values()


def test_dns_and_filters_are_escaped_in_both_kinds() -> None:
    assert councillor_dn(config("ad"), "a,b=c") == "CN=a\\,b\\=c,OU=councillors,DC=rada,DC=example"
    assert councillor_dn(config("openldap"), "a+b").startswith("uid=a\\+b,")
    filt = staff_filter(config("ad"), "x@y", "anna)(cn=*")
    assert "(sAMAccountName=anna\\29\\28cn=\\2a)" in filt


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"directory\.kind"):
        dialect_for("novell", config("openldap"))


def test_the_stack_samba_makes_the_service_speak_active_directory_to_it() -> None:
    settings = load_settings(DEFAULT_CONFIG, env={}).with_changes(
        var_dir=Path("/srv/m"), stack={"directory": "samba", "samba_host": "127.0.3.89"}
    )
    d = settings.ldap
    assert d.kind == "ad" and d.url == "ldaps://127.0.3.89:636"
    assert d.base_dn == "DC=rada,DC=miasto,DC=example"
    assert d.admin_dn == "CN=mailsvc-admin,CN=Users,DC=rada,DC=miasto,DC=example"
    assert d.ca_file == "/srv/m/samba-ca.pem"
    assert all(getattr(d, k) == v for k, v in AD_DEFAULTS.items())
    assert settings.ldap_url == d.url


def test_explicit_settings_win_over_the_active_directory_defaults() -> None:
    mine = DirectorySettings(kind="ad", councillors_rdn="OU=Radni", url="ldaps://dc:636")
    d = effective_directory(mine, "openldap", load_settings(DEFAULT_CONFIG, env={}).samba_directory)
    assert d.councillors_rdn == "OU=Radni" and d.url == "ldaps://dc:636"
    assert d.person_object_class == "user" and d.admin_dn == DirectorySettings().admin_dn
    plain = effective_directory(
        DirectorySettings(), "openldap", load_settings(DEFAULT_CONFIG, env={}).samba_directory
    )
    assert plain == DirectorySettings(kind="openldap")


def test_delegation_gives_rights_on_the_class_of_each_container_only() -> None:
    sid = "S-1-5-21-1-2-3-1105"
    people = "".join(delegation_aces(sid, "people"))
    groups = "".join(delegation_aces(sid, "groups"))
    assert "00299570-246d-11d0-a768-00aa006e0529" in people  # Reset Password
    assert "bf967aba-0de6-11d0-a285-00aa003049e2" in people  # user
    assert "bf967a9c-0de6-11d0-a285-00aa003049e2" in groups and "00299570" not in groups
    assert "GA" not in people + groups  # never "generic all"


def test_sid_text_reads_a_binary_sid() -> None:
    raw = bytes([1, 4, 0, 0, 0, 0, 0, 5]) + b"".join(
        n.to_bytes(4, "little") for n in (21, 1, 2, 1105)
    )
    assert sid_text(raw) == "S-1-5-21-1-2-1105"
    with pytest.raises(ValueError):
        sid_text(b"\x01\x05")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILSVC_DIRECTORY__KIND": "novell"}, "directory.kind = 'novell'"),
        (
            {"MAILSVC_DIRECTORY__KIND": "ad", "MAILSVC_DIRECTORY__URL": "ldap://127.0.0.1:389"},
            "takes passwords only over TLS",
        ),
    ],
)
def test_a_directory_kind_that_cannot_work_is_refused_at_start(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(DEFAULT_CONFIG, env=env)


def test_groups_are_written_whole_to_slapd_and_in_batches_to_active_directory() -> None:
    # slapd adds a 50,000-member group in one request in about a second and pays for every
    # batch; Samba gave no answer within the 5 s timeout to that one request.
    assert Dialect.member_batch is None
    assert AdDialect.member_batch == 2000
