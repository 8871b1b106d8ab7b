"""The tests' forked `mailsvc` (tests/cli_fork.py) answers as `python -m mailsvc.cli` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import cli_fork

ROOT = Path(__file__).resolve().parents[2]


def _real(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailsvc.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["--help"], {}),  # 0, the help on stdout
        (["no-such-command"], {}),  # argparse: 2, the usage on stderr
        (["queue", "list"], {"MAILSVC_SMTP__PORT": "seventy"}),  # config error: 2
        (["dns", "--json"], {"MAILSVC_LANGUAGE": "en", "MAILSVC_DOMAIN": "rada.example.pl"}),
    ],
)
def test_the_forked_command_answers_as_a_fresh_process(
    args: list[str], extra: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
    env.update(MAILSVC_VAR_DIR=str(tmp_path / "var"), **extra)
    forked = cli_fork.run(args, env, tmp_path)
    real = _real(args, env, tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )


def test_the_forked_command_runs_in_its_own_process_and_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
    env["MAILSVC_VAR_DIR"] = str(tmp_path / "var")
    done = cli_fork.run(["--help"], env, tmp_path)
    assert done.returncode == 0 and "mailsvc" in done.stdout
    # Nothing of the command's environment stays behind in the helper or in this process.
    assert os.environ.get("MAILSVC_VAR_DIR") != env["MAILSVC_VAR_DIR"]
    again = cli_fork.run(["no-such-command"], env, tmp_path)
    assert again.returncode == 2 and again.stdout == ""
