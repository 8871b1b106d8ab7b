"""The generated slapd and Dovecot configuration files, byte for byte, against golden files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsvc.stack import local
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
    paths = local._Paths.of(settings.var_dir)
    who = local._DovecotIdentity(**vars(pinned))
    return {
        "slapd.conf": local._slapd_conf(settings, paths, ROOTPW_HASH),
        "base.ldif": local._base_ldif(settings.directory, READER_HASH),
        "dovecot.conf": local._dovecot_conf(settings, paths, who),
        "dovecot-ldap.conf.ext": local._dovecot_ldap_conf(settings, paths, who),
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
