"""`mailsvc init` without servers: the example config, refusals, --force, the language.
(tests/integration/test_init.py starts the service from what it writes.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mailsvc import resources
from mailsvc.cli.init import example_values, render_config
from mailsvc.cli.main import main
from mailsvc.config import load_settings

EXAMPLE = resources.config_dir() / "production.example.toml"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    for name in list(os.environ):
        if name.startswith("MAILSVC_"):
            monkeypatch.delenv(name)

    def run(
        directory: Path, *args: str, domain: str = "rada.gmina.example"
    ) -> tuple[int, str, str]:
        capsys.readouterr()
        argv = ["init", str(directory), "--domain", domain, "--council-name", "Rada Gminy"]
        status = main([*argv, *args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def test_the_example_is_the_template_with_example_values_and_loads() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == render_config(example_values()), (
        "config/production.example.toml differs from templates/production/mailsvc.toml.j2; "
        "write it again with render_config(example_values()) from mailsvc.cli.init"
    )
    settings = load_settings(EXAMPLE, env={})
    assert settings.smtp.tls_key == "/etc/letsencrypt/live/mail.rada.miasto.example/privkey.pem"
    assert settings.web.public_url == "https://mail.rada.miasto.example"
    assert settings.lmtp_address == ("127.0.0.1", 24)
    # The opened check runs, over IMAPS.
    assert settings.distribution.imap_check_interval > 0
    assert settings.client_imap == ("mail.rada.miasto.example", 993, "tls")


def test_a_non_empty_directory_or_a_config_is_refused_without_force(
    tmp_path: Path, run: Run
) -> None:
    (tmp_path / "notes.txt").write_text("the office's\n")
    status, out, err = run(tmp_path)
    assert (status, out) == (1, "")
    assert f"{tmp_path} is not empty" in err and "--force" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

    (tmp_path / "mailsvc.toml").write_text("# by hand\n")
    status, _, err = run(tmp_path)
    assert status == 1 and "mailsvc.toml exists already" in err
    assert (tmp_path / "mailsvc.toml").read_text() == "# by hand\n"


@pytest.mark.parametrize("domain", ["rada_gminy.pl", "localhost", "rada gminy.pl", ""])
def test_a_wrong_domain_is_named_and_nothing_is_written(
    tmp_path: Path, run: Run, domain: str
) -> None:
    status, _, err = run(tmp_path / "srv", domain=domain)
    assert status == 1
    assert f"--domain {domain!r}: not a mail domain" in err
    assert not (tmp_path / "srv").exists()


def test_a_path_systemd_cannot_name_is_refused_before_writing(tmp_path: Path, run: Run) -> None:
    status, _, err = run(tmp_path / "my mail")
    assert status == 1 and "a systemd unit cannot name this path" in err
    assert not (tmp_path / "my mail").exists()


def test_force_writes_the_config_again_and_keeps_secrets_and_keys(tmp_path: Path, run: Run) -> None:
    status, out, _ = run(tmp_path, "--language", "en")
    assert status == 0 and "Next steps:" in out and "Dalsze kroki" not in out
    first = load_settings(tmp_path / "mailsvc.toml", env={})
    assert first.language == "en"
    secrets = {p.name: p.read_bytes() for p in (first.var_dir / "secrets").iterdir()}
    (tmp_path / "mailsvc.toml").write_text("# edited\n")

    status, out, _ = run(tmp_path, "--force")
    assert status == 0 and "Dalsze kroki" in out
    again = load_settings(tmp_path / "mailsvc.toml", env={})
    assert again.language == "pl"
    assert {p.name: p.read_bytes() for p in (again.var_dir / "secrets").iterdir()} == secrets
    assert set(again.dkim.selectors) == set(first.dkim.selectors)
