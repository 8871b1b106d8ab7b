"""Settings: embedded default, file selection, environment overrides, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.errors import ConfigError


def test_embedded_default_documents_the_contract_keys() -> None:
    s = load_settings(env={})
    assert s.domain == "rada.miasto.example"
    assert s.var_dir == Path("var").absolute()
    assert (s.smtp.port, s.stack.ldap_port, s.stack.imap_port, s.stack.lmtp_port) == (
        2525,
        3389,
        1143,
        2424,
    )
    assert s.database_url == f"sqlite+aiosqlite:///{Path('var').absolute() / 'mailsvc.db'}"
    assert s.ldap_url == "ldap://127.0.0.1:3389"
    assert s.source == DEFAULT_CONFIG


def test_environment_overrides_section_and_top_level_keys() -> None:
    env = {
        "MAILSVC_SMTP__PORT": "2600",
        "MAILSVC_DOMAIN": "rada.gmina.example",
        "MAILSVC_STACK__LMTP_PORT": "2700",
        "MAILSVC_DATABASE__URL": "postgresql+asyncpg://u:p@localhost/mailsvc",
        "MAILSVC_VAR_DIR": "/tmp/x",
    }
    s = load_settings(env=env)
    assert s.smtp.port == 2600
    assert s.domain == "rada.gmina.example"
    assert s.lmtp_address == ("127.0.0.1", 2700)
    assert s.database_url.startswith("postgresql+asyncpg://")
    assert s.var_dir == Path("/tmp/x")


def test_mailsvc_config_selects_another_file(tmp_path: Path) -> None:
    cfg = tmp_path / "other.toml"
    cfg.write_text('domain = "rada.powiat.example"\n[smtp]\nport = 2526\n', encoding="utf-8")
    s = load_settings(env={"MAILSVC_CONFIG": str(cfg)})
    assert (s.domain, s.smtp.port, s.source) == ("rada.powiat.example", 2526, cfg)
    # Keys not in the file keep their defaults.
    assert s.stack.imap_port == 1143


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (
            {"MAILSVC_SMTP__PORT": "abc"},
            "smtp.port (from MAILSVC_SMTP__PORT) = 'abc': expected a whole number",
        ),
        ({"MAILSVC_SMTP__PORT": "70000"}, "smtp.port = 70000: expected a TCP port"),
        ({"MAILSVC_DOMAIN": "Not A Domain"}, "domain = 'Not A Domain'"),
        ({"MAILSVC_LANGUAGE": "de"}, "language = 'de': expected 'pl' or 'en'"),
        ({"MAILSVC_DATABASE__URL": "mysql://x"}, "database.url = <hidden>"),
        ({"MAILSVC_DIRECTORY__BASE_DN": "nonsense"}, "directory.base_dn = 'nonsense'"),
        (
            {"MAILSVC_RELAY__ACKNOWLEDGE_MAX_PER_HOUR": "0"},
            "relay.acknowledge_max_per_hour = 0: expected a number greater than 0",
        ),
        (
            {"MAILSVC_RELAY__OWN_DOMAINS": "rada.example, not a domain"},
            "relay.own_domains: 'not' is not a mail domain",
        ),
        ({"MAILSVC_SMTP__SESSION_MAX_SECONDS": "0"}, "smtp.session_max_seconds = 0.0"),
        ({"MAILSVC_SMTP__ENUMERATION_MISSES": "-1"}, "smtp.enumeration_misses = -1"),
        ({"MAILSVC_DIRECTORY__STAFF_RDN": "staff"}, "directory.staff_rdn = 'staff'"),
        # Staff inside the councillors' subtree (a roster would see them), or the reverse.
        (
            {"MAILSVC_DIRECTORY__STAFF_RDN": "ou=staff, OU=Councillors"},
            "must be separate subtrees",
        ),
        (
            {
                "MAILSVC_DIRECTORY__STAFF_RDN": "ou=people",
                "MAILSVC_DIRECTORY__COUNCILLORS_RDN": "ou=rada,ou=people",
            },
            "must be separate subtrees",
        ),
        ({"MAILSVC_DIRECTORY__STAFF_RDN": "ou=councillors"}, "must be separate subtrees"),
        ({"MAILSVC_CLIENTS__SMTPS_PORT": "70000"}, "clients.smtps_port = 70000: expected"),
        (
            {"MAILSVC_CLIENTS__IMAP_CA_FILE": "/nonexistent/ca.pem"},
            "clients.imap_ca_file = '/nonexistent/ca.pem': expected a PEM file",
        ),
        ({"MAILSVC_STACK__IMAPS_PORT": "70000"}, "stack.imaps_port = 70000: expected"),
        ({"MAILSVC_STACK__IMAPS_PORT": "1143"}, "stack.imaps_port = 1143: expected a port of"),
    ],
)
def test_wrong_values_name_key_value_and_expectation(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_staff_live_apart_from_the_councillors_by_default() -> None:
    d = load_settings(env={}).directory
    assert d.staff_dn == "ou=staff,dc=rada,dc=miasto,dc=example"
    assert d.councillors_dn == "ou=councillors,dc=rada,dc=miasto,dc=example"
    # Siblings whose names share a suffix are not nested.
    load_settings(env={"MAILSVC_DIRECTORY__STAFF_RDN": "ou=xcouncillors"})


def test_own_domains_are_the_domain_and_the_listed_ones() -> None:
    s = load_settings(env={"MAILSVC_RELAY__OWN_DOMAINS": " Miasto.example., bip.rada.example "})
    assert s.relay.own_domain_list(s.domain) == (s.domain, "miasto.example", "bip.rada.example")
    assert load_settings(env={}).relay.own_domain_list("rada.example") == ("rada.example",)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.toml"
    cfg.write_text("[smtp]\nprot = 25\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"smtp\.prot: unknown key"):
        load_settings(cfg, env={})


def test_wrong_type_in_file_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[stack]\nldap_port = "389"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"stack\.ldap_port = '389': expected a whole number"):
        load_settings(cfg, env={})


def test_cli_exits_2_with_one_line_on_a_wrong_value() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mailsvc.cli", "check"],
        env={"MAILSVC_SMTP__PORT": "zero", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "smtp.port" in lines[0] and "'zero'" in lines[0]


def test_secrets_are_not_in_repr() -> None:
    s = load_settings(env={"MAILSVC_DIRECTORY__ADMIN_PASSWORD": "hunter2-very-secret"})
    assert s.directory.admin_password == "hunter2-very-secret"
    assert "hunter2" not in repr(s)


@pytest.mark.parametrize(
    "url",
    ["ldap://ldap.example.org", "ldap://192.0.2.7:389", "LDAP://[2001:db8::1]:389"],
)
def test_cleartext_ldap_to_another_machine_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"MAILSVC_DIRECTORY__URL": url})
    message = str(info.value)
    assert message.startswith(f"directory.url = {url!r}: ldap:// to another machine")
    # The error names both fixes.
    assert "directory.starttls = true" in message and "ldaps://" in message


@pytest.mark.parametrize(
    "url",
    ["ldap://ldap.example.org", "ldap://192.0.2.7:389", "ldap://[2001:db8::1]:389"],
)
def test_ldap_to_another_machine_is_accepted_with_starttls(url: str) -> None:
    env = {"MAILSVC_DIRECTORY__URL": url, "MAILSVC_DIRECTORY__STARTTLS": "true"}
    settings = load_settings(env=env)
    assert settings.directory.url == url and settings.directory.starttls is True


def test_starttls_on_ldaps_is_refused() -> None:
    env = {
        "MAILSVC_DIRECTORY__URL": "ldaps://ldap.example.org:636",
        "MAILSVC_DIRECTORY__STARTTLS": "true",
    }
    with pytest.raises(ConfigError, match=r"StartTLS is for ldap://; use one of them"):
        load_settings(env=env)


def test_starttls_to_the_embedded_slapd_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"directory\.starttls = true: the embedded slapd"):
        load_settings(env={"MAILSVC_DIRECTORY__STARTTLS": "true"})


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ldap://127.0.0.1:3389",
        "ldap://localhost",
        "ldap://[::1]:389",
        "ldap://127.0.0.5",
        "ldaps://ldap.example.org:636",
    ],
)
def test_ldaps_anywhere_and_ldap_on_this_machine_are_accepted(url: str) -> None:
    assert load_settings(env={"MAILSVC_DIRECTORY__URL": url}).directory.url == url


def test_a_directory_url_that_is_not_ldap_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"directory\.url = 'http://x': expected ldaps://"):
        load_settings(env={"MAILSVC_DIRECTORY__URL": "http://x"})


def test_unknown_environment_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"^MAILSVC_STACK__FOO: unknown environment variable"):
        load_settings(env={"MAILSVC_STACK__FOO": "1"})
    with pytest.raises(ConfigError, match=r"MAILSVC_SMTP__PROT: .*did you mean MAILSVC_SMTP__PORT"):
        load_settings(env={"MAILSVC_SMTP__PROT": "25"})


def test_prefixed_variables_that_are_not_settings_are_accepted() -> None:
    env = {
        "MAILSVC_CONFIG": str(DEFAULT_CONFIG),
        "MAILSVC_EVENT_LOOP": "asyncio",
        "MAILSVC_DKIM__SELECTORS": "",
        "MAILSVC_STACK__DIRECTORY": "openldap",
        "OTHER_MAILSVC_FOO": "1",
    }
    assert load_settings(env=env).stack.directory == "openldap"


def test_cli_exits_2_naming_an_unknown_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailsvc.cli.main import main

    monkeypatch.setenv("MAILSVC_STACK__FOO", "1")
    assert main(["check"]) == 2
    assert "MAILSVC_STACK__FOO" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["imap.rada.example", "192.0.2.7", "[2001:db8::1]"])
def test_the_opened_check_refuses_clear_text_imap_to_another_machine(host: str) -> None:
    # The check logs in with Dovecot's master password, which opens every mailbox.
    env = {"MAILSVC_CLIENTS__IMAP_HOST": host, "MAILSVC_CLIENTS__IMAP_PORT": "143"}
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    message = str(info.value)
    assert message.startswith(f"clients.imap_security = 'none' with clients.imap_host = {host!r}")
    assert "clients.imap_security = 'tls'" in message
    assert "distribution.imap_check_interval = 0" in message
    # Either fix is accepted; so is clear text on this machine.
    load_settings(env={**env, "MAILSVC_CLIENTS__IMAP_SECURITY": "tls"})
    load_settings(env={**env, "MAILSVC_CLIENTS__IMAP_SECURITY": "starttls"})
    load_settings(env={**env, "MAILSVC_DISTRIBUTION__IMAP_CHECK_INTERVAL": "0"})
    load_settings(env={**env, "MAILSVC_CLIENTS__IMAP_HOST": "127.0.0.1"})


def test_stack_database_postgresql_points_the_default_url_at_the_stacks_cluster(
    tmp_path: Path,
) -> None:
    env = {
        "MAILSVC_STACK__DATABASE": "postgresql",
        "MAILSVC_STACK__PG_PORT": "6543",
        "MAILSVC_VAR_DIR": str(tmp_path),
    }
    s = load_settings(env=env)
    # Before the stack ever ran there is no password yet.
    assert s.database_url == "postgresql+asyncpg://mailsvc@127.0.0.1:6543/mailsvc"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "postgres-mailsvc").write_text("pa/ss@word\n", encoding="ascii")
    assert s.database_url == "postgresql+asyncpg://mailsvc:pa%2Fss%40word@127.0.0.1:6543/mailsvc"
    # An explicit database.url wins over the stack's cluster.
    other = "postgresql+asyncpg://u:p@db.example/mailsvc"
    assert load_settings(env={**env, "MAILSVC_DATABASE__URL": other}).database_url == other


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MAILSVC_STACK__DATABASE": "mysql"}, "stack.database = 'mysql': expected 'sqlite'"),
        ({"MAILSVC_STACK__PG_PORT": "0"}, "stack.pg_port = 0: expected a TCP port"),
    ],
)
def test_stack_database_settings_are_checked(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert fragment in str(info.value)
