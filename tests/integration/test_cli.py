"""The `mailsvc` command as a user runs it, against the real local stack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from mailsvc.config import Settings
from mailsvc.mailbox import read_inbox
from provisioning.directory import Directory
from tests import cli_fork

# Run against Samba's AD DC too (make test-samba): what the directory server may change.
pytestmark = pytest.mark.directory


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
    env.update(
        MAILSVC_VAR_DIR=str(settings.var_dir),
        MAILSVC_SMTP__PORT=str(settings.smtp.port or 2525),
        MAILSVC_STACK__LDAP_PORT=str(settings.stack.ldap_port),
        MAILSVC_STACK__DIRECTORY=settings.stack.directory,
        MAILSVC_STACK__SAMBA_HOST=settings.stack.samba_host,
        MAILSVC_STACK__IMAP_PORT=str(settings.stack.imap_port),
        MAILSVC_STACK__LMTP_PORT=str(settings.stack.lmtp_port),
        MAILSVC_DATABASE__URL=settings.database_url,
    )
    env.update(extra)
    return env


def run_cli(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``mailsvc ARGS`` in a process of its own (forked from one that has imported mailsvc:
    tests/cli_fork.py), with the stack's settings in its environment."""
    return cli_fork.run(args, cli_env(settings, **extra), Path(__file__).resolve().parents[2])


async def test_councillors_add_json_prints_a_working_login(
    settings: Settings, directory: Directory
) -> None:
    proc = await asyncio.to_thread(
        run_cli,
        settings,
        "councillors",
        "add",
        "--given-name",
        "Łukasz",
        "--surname",
        "Żółć",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["address"] == f"lukasz.zolc@{settings.domain}"
    assert len(out["password"]) >= 16
    # The password works against the real Dovecot (which binds to slapd with it), and the new
    # mailbox holds its welcome message.
    inbox = await read_inbox(
        settings.stack.host, settings.stack.imap_port, out["address"], out["password"]
    )
    assert len(inbox) == 1
    welcome = message_from_bytes(inbox[0], policy=policy.default)
    assert str(welcome["Subject"]).startswith("Witamy")
    # Stored only hashed.
    entry = await directory.find_by_address(out["address"])
    assert entry is not None
    assert out["password"] not in json.dumps(dict(entry.attributes), default=str)


async def test_second_councillor_with_the_same_name_gets_another_address(
    settings: Settings, directory: Directory
) -> None:
    args = ("councillors", "add", "--given-name", "Jan", "--surname", "Kowalski", "--json")
    first = json.loads((await asyncio.to_thread(run_cli, settings, *args)).stdout)
    second = json.loads((await asyncio.to_thread(run_cli, settings, *args)).stdout)
    assert first["address"] == f"jan.kowalski@{settings.domain}"
    assert second["address"] == f"jan.kowalski2@{settings.domain}"


async def test_check_reports_each_part_and_fails_when_one_is_down(
    settings: Settings, local_stack: Any
) -> None:
    ok = await asyncio.to_thread(run_cli, settings, "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    names = [line.split()[0] for line in ok.stdout.splitlines()]
    # Nothing to judge yet for DNS (a domain not in public DNS), the certificate (none) and
    # the scheduler (no job has run in this database).
    # Active Directory: the service account's delegated rights besides.
    rights = ["directory-rights"] if settings.ldap.kind == "ad" else []
    assert names == [
        "config",
        "directory",
        *rights,
        "mailstore",
        "database",
        "tls-cert",
        "dns",
        "disk",
        "scheduler",
        "scheduler-leader",
    ]
    bad = await asyncio.to_thread(run_cli, settings, "check", MAILSVC_DELIVERY__LMTP_PORT="1")
    assert bad.returncode == 1
    failing = [line for line in bad.stdout.splitlines() if line.startswith("mailstore")]
    assert failing and "BŁĄD" in failing[0]
