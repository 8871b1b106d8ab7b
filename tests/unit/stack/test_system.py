"""The files for the system's slapd and Dovecot without servers: their modes, the installation's
secrets in them (hashed where the file allows), the refusal of a certificate that is not a file,
and Dovecot's two files byte for byte against golden files. tests/integration/test_init_system.py
parses them with Debian's servers and runs them."""

from __future__ import annotations

import re
import stat
import tempfile
from pathlib import Path

import pytest

from mailsvc import mailstore, resources, secret_store
from mailsvc.config import Settings, load_settings
from mailsvc.stack import StackError, system
from provisioning.passwords import verify_password

GOLDEN = Path(__file__).parent / "golden" / "system"
GOLDEN_FILES = (system.DOVECOT_CONF, system.DOVECOT_LDAP_CONF)


def production(var_dir: Path) -> Settings:
    """config/production.example.toml (what `mailsvc init` writes) on ``var_dir``."""
    return load_settings(resources.config_dir() / "production.example.toml", env={}).with_changes(
        var_dir=var_dir, directory={"reader_password": 'Reader "Pass" #1'}
    )


def test_the_files_are_private_and_hold_the_installations_secrets(tmp_path: Path) -> None:
    settings = production(tmp_path / "var")
    target = tmp_path / "system"

    written = system.write(settings, target)

    modes = {p.relative_to(target): stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == {
        system.SLAPD_CONF: 0o600,
        system.BASE_LDIF: 0o600,
        system.DOVECOT_CONF: 0o644,
        system.DOVECOT_LDAP_CONF: 0o600,
        system.MASTER_USERS: 0o600,
    }
    assert stat.S_IMODE(target.stat().st_mode) == 0o700

    def value(name: Path, pattern: str) -> str:
        found = re.search(pattern, (target / name).read_text(), re.M)
        assert found, pattern
        return found.group(1)

    rootpw = value(system.SLAPD_CONF, r"^rootpw (\S+)$")
    assert rootpw.startswith("{ARGON2}")
    assert verify_password(secret_store.admin_password(settings), rootpw)
    reader_hash = value(system.BASE_LDIF, r"^userPassword: (\S+)$")
    assert verify_password('Reader "Pass" #1', reader_hash)
    master_hash = value(system.MASTER_USERS, r"^master:(\S+)$")
    assert verify_password(mailstore.master_secret(settings), master_hash)
    # Dovecot's LDAP file needs the reader's password itself.
    assert value(system.DOVECOT_LDAP_CONF, r"^dnpass = (.*)$") == '"Reader \\"Pass\\" #1"'


@pytest.mark.parametrize(("cert", "key"), [("auto", ""), ("", ""), ("/etc/cert.pem", "")])
def test_a_certificate_that_is_not_a_pair_of_files_is_refused(
    tmp_path: Path, cert: str, key: str
) -> None:
    settings = production(tmp_path).with_changes(smtp={"tls_cert": cert, "tls_key": key})

    with pytest.raises(StackError, match=r"^smtp\.tls_cert and smtp\.tls_key must name"):
        system.render(settings)


def render_golden(var_dir: Path) -> dict[Path, str]:
    files = system.render(production(var_dir))
    return {name: files[name][0] for name in GOLDEN_FILES}


def test_dovecots_files_match_golden(tmp_path: Path) -> None:
    for name, text in render_golden(tmp_path).items():
        assert text == (GOLDEN / name.name).read_text(encoding="utf-8"), name


if __name__ == "__main__":
    # Regenerate the golden files (by hand, after a deliberate change; review the diff).
    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name, text in render_golden(Path(scratch)).items():
            (GOLDEN / name.name).write_text(text, encoding="utf-8")
