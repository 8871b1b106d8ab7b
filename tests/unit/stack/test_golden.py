"""The generated slapd, Samba and Dovecot configuration files, byte for byte, against golden
files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsvc.stack import configs, ldif
from mailsvc.stack.layout import Paths
from tests.unit.stack.scenarios import (
    FILES,
    GOLDEN_DIR,
    READER_HASH,
    ROOTPW_HASH,
    SCENARIOS,
)


def render(scenario: str) -> dict[str, str]:
    make_settings, pinned = SCENARIOS[scenario]
    settings = make_settings()
    paths = Paths.of(settings.var_dir)
    reader_password = settings.directory.reader_password
    return {
        "slapd.conf": configs.slapd_conf(settings, paths, ROOTPW_HASH),
        "base.ldif": ldif.base_ldif(settings.directory, READER_HASH),
        "dovecot.conf": configs.dovecot_conf(paths, pinned, paths.dovecot_mailsvc_conf),
        "mailsvc.conf": configs.dovecot_mailsvc_conf(settings, paths, pinned),
        "dovecot-ldap.conf.ext": configs.dovecot_ldap_conf(
            settings, paths, pinned, reader_password
        ),
        "smb.conf": configs.smb_conf(settings, paths),
    }


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("name", FILES)
def test_generated_file_matches_golden(scenario: str, name: str) -> None:
    golden = (GOLDEN_DIR / scenario / name).read_text(encoding="utf-8")
    assert render(scenario)[name] == golden


def write_goldens() -> None:
    """Regenerate the golden files (run by hand after a deliberate change; review the diff)."""
    for scenario in SCENARIOS:
        directory = GOLDEN_DIR / scenario
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in render(scenario).items():
            Path(directory / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_goldens()
