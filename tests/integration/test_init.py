"""`mailsvc init` on the real stack: what it writes loads, its systemd unit passes
`systemd-analyze verify`, and the unit's own command line starts a service that answers SMTP
under the unit's SystemCallFilter= and MemoryDenyWriteExecute=, applied here as systemd would
(no systemd manager runs in the test machine, so the unit's other settings, ProtectSystem= and
the like, are only verified, not run)."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import shlex
import smtplib
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailsvc import secret_store
from mailsvc.cli.main import main
from mailsvc.config import Settings, load_settings
from mailsvc.stack import free_ports

# Not in the PostgreSQL pass (make test-postgresql):
# `mailsvc init`'s service runs on its own SQLite default.
pytestmark = pytest.mark.no_database

SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One `mailsvc init` for the module: its directory and what it printed."""
    directory = tmp_path_factory.mktemp("init") / "srv"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as env:
        # As an operator runs it: none of the test run's MAILSVC_* variables (such as
        # MAILSVC_TEST_DATABASE, which is no setting and would be refused as a typo).
        for name in [n for n in os.environ if n.startswith("MAILSVC_")]:
            env.delenv(name)
        status = main(
            [
                "init",
                str(directory),
                "--domain",
                "rada.miasto.example",  # the session stack's base DN and bind DNs
                "--council-name",
                "Rada Miasta Żółtowo",
            ]
        )
    assert status == 0
    yield directory, out.getvalue()


def test_init_writes_a_private_layout_that_loads(installed: tuple[Path, str]) -> None:
    directory, printed = installed
    config = directory / "mailsvc.toml"
    settings = load_settings(config, env={})
    assert settings.var_dir == directory / "var"
    assert settings.council.name == "Rada Miasta Żółtowo"
    assert (settings.smtp.port, settings.submission.port) == (25, 587)
    assert settings.smtp.tls_cert == "/etc/letsencrypt/live/mail.rada.miasto.example/fullchain.pem"
    assert settings.directory.url == "ldap://127.0.0.1:389"
    assert sorted(s.algorithm for s in settings.dkim.selectors) == [
        "ed25519-sha256",
        "rsa-sha256",
    ]

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(config) == 0o600
    for name in ("", "secrets", "spool", "documents", "capture"):
        assert mode(settings.var_dir / name) == 0o700, name
    secrets = sorted((settings.var_dir / "secrets").iterdir())
    names = {p.name for p in secrets}
    assert {
        "ldap-admin",
        "ldap-reader",
        "dovecot-master",
        "receipts-key",
        "web-cookie-key",
    } <= names
    assert {p.name for p in map(settings.dkim_key_file, settings.dkim.selectors)} <= names
    assert all(mode(p) == 0o600 for p in secrets)
    # The next steps, in Polish by default: DNS, certificates, check, systemd.
    assert "Dalsze kroki" in printed
    for step in (" dns", "certbot certonly", " check", "systemctl enable --now mailsvc"):
        assert step in printed, step


def test_the_written_unit_passes_systemd_analyze_verify(installed: tuple[Path, str]) -> None:
    unit = installed[0] / "systemd" / "mailsvc.service"
    # verify checks that ExecStart's program exists and is executable: the venv's mailsvc.
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # The hardening stays where it is: exposure 1.4 of 10 when written (README, "systemd").
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def _service_settings(unit: str) -> dict[str, list[str]]:
    """The [Service] section's assignments, each key's values in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in unit.splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def _syscalls(word: str) -> set[str]:
    if not word.startswith("@"):
        return {word}
    listing = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter", word], capture_output=True, text=True, check=True
    ).stdout.splitlines()[1:]
    words = [w.strip() for w in listing if w.strip() and not w.strip().startswith("#")]
    return set().union(*map(_syscalls, words))


def allowed_syscalls(filters: list[str]) -> set[str]:
    """SystemCallFilter= lines as systemd reads them: the first one lists what is allowed,
    each later one adds to it, or takes away with "~"."""
    allowed: set[str] = set()
    for spec in filters:
        words = set().union(*map(_syscalls, spec.removeprefix("~").split()))
        allowed = allowed - words if spec.startswith("~") else allowed | words
    return allowed


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_GET_MDWE, 0, 0, 0, 0)) >= 0


# `python -c SANDBOX_EXEC mdwe|- SYSCALL,... program args...` does what systemd does before it
# starts the unit's program (none runs here as PID 1): no new privileges, the seccomp allow
# list (anything else fails with EPERM), MDWE if asked (both kept across fork and exec; MDWE
# is checked to refuse a writable and executable mapping), then exec.
SANDBOX_EXEC = f"""
import ctypes, mmap, os, sys
mdwe, names, program = sys.argv[1] == "mdwe", sys.argv[2].split(","), sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)
sc = ctypes.CDLL("libseccomp.so.2")
sc.seccomp_init.restype = ctypes.c_void_p
sc.seccomp_init.argtypes = [ctypes.c_uint32]
sc.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
sc.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
sc.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = sc.seccomp_init(0x00050000 | 1)  # SCMP_ACT_ERRNO(EPERM)
for name in names:
    number = sc.seccomp_syscall_resolve_name(name.encode())
    if number >= 0:  # else not a system call of this architecture
        sc.seccomp_rule_add(ctx, 0x7FFF0000, number, 0)  # SCMP_ACT_ALLOW
if mdwe and libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
if libc.prctl(38, 1, 0, 0, 0) != 0 or sc.seccomp_load(ctx) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("the seccomp filter could not be loaded")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    if mdwe:
        sys.exit("MDWE set but a W+X mapping was allowed")
except PermissionError:
    pass
os.execv(program[0], program)
"""


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise AssertionError(f"the service did not start: {log.read_text()[-3000:]}")


def test_the_units_command_starts_a_service_that_answers_smtp(
    installed: tuple[Path, str], stack_settings: Settings, local_stack: Any
) -> None:
    directory = installed[0]
    unit = (directory / "systemd" / "mailsvc.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    command = shlex.split(exec_start.removeprefix("ExecStart="))
    assert command[-3:] == ["--config", str(directory / "mailsvc.toml"), "serve"]
    smtp_port, submission_port, web_port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
    # The production addresses and certificates, pointed at the session's stack and ports.
    env |= {
        "MAILSVC_SMTP__HOST": "127.0.0.1",
        "MAILSVC_SMTP__PORT": str(smtp_port),
        "MAILSVC_SMTP__TLS_CERT": "auto",
        "MAILSVC_SMTP__TLS_KEY": "",
        "MAILSVC_SMTP__AUTHENTICATION_CHECKS": "false",
        "MAILSVC_SUBMISSION__HOST": "127.0.0.1",
        "MAILSVC_SUBMISSION__PORT": str(submission_port),
        "MAILSVC_WEB__PORT": str(web_port),
        "MAILSVC_DIRECTORY__URL": f"ldap://127.0.0.1:{stack_settings.stack.ldap_port}",
        "MAILSVC_DIRECTORY__ADMIN_PASSWORD": secret_store.admin_password(stack_settings),
        "MAILSVC_DIRECTORY__READER_PASSWORD": secret_store.reader_password(stack_settings),
        "MAILSVC_DELIVERY__LMTP_PORT": str(stack_settings.stack.lmtp_port),
    }
    service = _service_settings(unit)
    assert service["MemoryDenyWriteExecute"] == ["yes"]
    syscalls = ",".join(sorted(allowed_syscalls(service["SystemCallFilter"])))
    mdwe = "mdwe" if _mdwe_supported() else "-"
    command = [sys.executable, "-c", SANDBOX_EXEC, mdwe, syscalls, *command]
    log = directory / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(proc, smtp_port, log)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
            code, banner = smtp.ehlo("resident.example.org")
            assert code == 250 and b"STARTTLS" in banner
            assert smtp.mail("jan@example.org")[0] == 250
            # An answer only the directory can give (reached with the reader's password).
            code, reply = smtp.rcpt("nobody.here@rada.miasto.example")
            assert (code, reply[:5]) == (550, b"5.1.1")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
