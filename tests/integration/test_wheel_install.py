"""`pip install` of the built wheel, outside the repository: the installed `mailsvc` works alone.

The wheel is built as `python -m build` would (an sdist first, the wheel from the unpacked sdist,
so both carry templates/ and config/). It goes into a fresh venv under /tmp with its dependencies
from requirements.lock, every file checked against its hash. That venv's `mailsvc` then runs from
a directory outside the checkout, with no PYTHONPATH: stack up, a councillor, the service, a
resident's message over SMTP, read back over IMAP.
"""

from __future__ import annotations

import filecmp
import hashlib
import imaplib
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailsvc import resources
from mailsvc.stack import free_ports
from mailsvc.storage import schema

# Not in the PostgreSQL pass (make test-postgresql):
# the installed wheel runs on its own SQLite default.
pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
# What the subprocess reports about the mailsvc it imports.
PROBE = """\
import json, sys, sysconfig
import mailsvc, mailsvc.config, mailsvc.resources, mailsvc.templating
print(json.dumps({
    "file": mailsvc.__file__,
    "site_packages": sysconfig.get_paths()["purelib"],
    "templates": str(mailsvc.resources.templates_dir()),
    "templating": str(mailsvc.templating.TEMPLATES_DIR),
    "config": str(mailsvc.resources.config_dir()),
    "default_config": str(mailsvc.config.DEFAULT_CONFIG),
    "path": sys.path,
}))
"""


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path
    seconds: float

    @property
    def mailsvc(self) -> Path:
        return self.venv / "bin" / "mailsvc"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def _run(
    args: list[str | Path],
    timeout: float,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _build_wheel(out: Path) -> Path:
    """sdist from the checkout, then the wheel from the unpacked sdist (a clean build tree)."""
    build_sdist = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    name = _run([sys.executable, "-c", build_sdist], 120, cwd=ROOT).strip().splitlines()[-1]
    with tarfile.open(out / name) as tar:
        tar.extractall(out, filter="data")
    unpacked = out / name.removesuffix(".tar.gz")
    # No build isolation: the build uses the locked setuptools already installed, nothing
    # fetched without a hash (as the Makefile's venv target does).
    pip_wheel = ["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run([sys.executable, *pip_wheel, "-w", out / "dist", unpacked], 300, env=outside_env())
    (wheel,) = (out / "dist").glob("mailsvc-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    """The wheel installed in a fresh venv in /tmp (built once per test session)."""
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mailsvc-wheel-", dir="/tmp"))
    try:
        wheel = _build_wheel(work)
        venv = work / "venv"
        _run([sys.executable, "-m", "venv", "--without-pip", venv], 120, env=outside_env())
        # The wheel is a requirement with its own hash; requirements.lock constrains everything
        # it pulls in to the locked version and hashes, so only the runtime part is installed.
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        requirement = work / "requirements.txt"
        requirement.write_text(f"mailsvc @ {wheel.as_uri()} --hash=sha256:{digest}\n")
        # Run outside the checkout and without PYTHONPATH: pip would otherwise count the
        # checkout's mailsvc.egg-info as mailsvc already installed.
        # --no-compile: the modules the tests import are compiled when first imported; pip
        # compiling every installed file first took half of this install (28 of 55 s).
        pip = ["-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-compile"]
        locked = ["--require-hashes", "-c", ROOT / "requirements.lock", "-r", requirement]
        _run([sys.executable, *pip, *locked], 600, cwd=work, env=outside_env())
        yield Installed(venv, wheel, time.monotonic() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def outside_env(**extra: str) -> dict[str, str]:
    """The caller's environment without PYTHONPATH, a virtualenv or MAILSVC_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("MAILSVC_")
    }
    env.update(extra)
    return env


@pytest.fixture
def outside() -> Iterator[Path]:
    """A working directory outside the checkout (short: Dovecot's socket paths live in it)."""
    cwd = Path(tempfile.mkdtemp(prefix="ms", dir="/tmp"))
    cwd.chmod(0o711)  # var/ lies inside, and Dovecot's delivery user must pass through
    assert not cwd.is_relative_to(ROOT)
    yield cwd
    shutil.rmtree(cwd, ignore_errors=True)


def test_the_installed_package_carries_templates_and_config_and_reads_them_from_site_packages(
    installed: Installed, outside: Path
) -> None:
    seen = json.loads(_run([installed.python, "-c", PROBE], 60, cwd=outside, env=outside_env()))
    site = Path(seen["site_packages"])
    assert site.is_relative_to(installed.venv)
    assert Path(seen["file"]) == site / "mailsvc" / "__init__.py"
    assert str(ROOT) not in json.dumps(seen["path"])
    assert Path(seen["templates"]) == site / "mailsvc" / "_data" / "templates"
    assert Path(seen["templating"]) == Path(seen["templates"])
    assert Path(seen["config"]) == site / "mailsvc" / "_data" / "config"
    assert Path(seen["default_config"]) == site / "mailsvc" / "_data" / "config" / "mailsvc.toml"
    # Every file of the source directories, byte for byte, and nothing else.
    assert resources.source_root() == ROOT  # this test process reads the checkout's
    for name, shipped in (("templates", seen["templates"]), ("config", seen["config"])):
        ours = sorted(p.relative_to(ROOT / name) for p in (ROOT / name).rglob("*") if p.is_file())
        theirs = sorted(p.relative_to(shipped) for p in Path(shipped).rglob("*") if p.is_file())
        assert theirs == ours
        _, mismatch, errors = filecmp.cmpfiles(ROOT / name, shipped, ours, shallow=False)
        assert (mismatch, errors) == ([], [])
    help_text = _run([installed.mailsvc, "--help"], 60, cwd=outside, env=outside_env())
    assert "usage: mailsvc" in help_text
    print(f"wheel built and installed in {installed.seconds:.1f} s")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "mailsvc serve exited:\n" + log.read_text()
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("mailsvc serve did not come up:\n" + log.read_text())


def _inbox(port: int, user: str, password: str) -> list[bytes]:
    with imaplib.IMAP4(LOOPBACK, port, timeout=10) as imap:
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        messages = []
        for number in data[0].split():
            _, parts = imap.fetch(number, "(BODY.PEEK[])")
            first = parts[0]
            assert isinstance(first, tuple)
            messages.append(first[1])
        return messages


def test_a_message_goes_end_to_end_through_the_installed_mailsvc(
    installed: Installed, outside: Path
) -> None:
    ldap, imap, lmtp, smtp, submission, web = free_ports(6)
    env = outside_env(
        # The embedded default (shipped in the wheel), var_dir relative to the working directory.
        MAILSVC_VAR_DIR="var",
        MAILSVC_STACK__HOST=LOOPBACK,
        MAILSVC_STACK__LDAP_PORT=str(ldap),
        MAILSVC_STACK__IMAP_PORT=str(imap),
        MAILSVC_STACK__LMTP_PORT=str(lmtp),
        MAILSVC_SMTP__HOST=LOOPBACK,
        MAILSVC_SMTP__PORT=str(smtp),
        # No SPF/DKIM/DMARC lookups against the machine's resolver.
        MAILSVC_SMTP__AUTHENTICATION_CHECKS="false",
        MAILSVC_SUBMISSION__PORT=str(submission),
        MAILSVC_WEB__PORT=str(web),
    )

    def mailsvc(*args: str) -> str:
        return _run([installed.mailsvc, *args], 90, cwd=outside, env=env)

    log = outside / "serve.log"
    serve: subprocess.Popen[bytes] | None = None
    try:
        mailsvc("stack", "up")
        # The stack's configs were rendered from the shipped templates into the relative var_dir.
        assert (outside / "var").is_dir()
        checked = mailsvc("check")
        config_line = next(line for line in checked.splitlines() if line.startswith("config"))
        assert str(installed.venv / "lib") in config_line, checked
        assert config_line.endswith("mailsvc/_data/config/mailsvc.toml"), checked

        added = json.loads(
            mailsvc("councillors", "add", "--given-name", "Łukasz", "--surname", "Żółć", "--json")
        )
        address, password = added["address"], added["password"]
        # The schema's migrations ran from the installed package's copy.
        assert f"{schema.head()}," in mailsvc("db", "status")

        with log.open("wb") as out:
            serve = subprocess.Popen(
                [str(installed.mailsvc), "serve"], cwd=outside, env=env, stdout=out, stderr=out
            )
        _wait_for_port(smtp, serve, log)

        message = EmailMessage()
        message["From"] = "mieszkanka@example.org"
        message["To"] = address
        message["Subject"] = "Dziura w jezdni na ul. Długiej"
        message.set_content("Dzień dobry,\nproszę o interwencję.\n")
        with smtplib.SMTP(LOOPBACK, smtp, timeout=30) as client:
            client.send_message(message)

        deadline = time.monotonic() + 30
        subjects: list[str] = []
        while time.monotonic() < deadline:
            subjects = [
                str(message_from_bytes(raw, policy=policy.default)["Subject"])
                for raw in _inbox(imap, address, password)
            ]
            if "Dziura w jezdni na ul. Długiej" in subjects:
                break
            time.sleep(0.2)
        # The welcome message (a shipped mail template) and the resident's message.
        assert len(subjects) == 2, subjects
        assert subjects[0].startswith("Witamy"), subjects
        assert subjects[1] == "Dziura w jezdni na ul. Długiej", [*subjects, log.read_text()]

        # The web pages and their static file come from the shipped templates too.
        with urllib.request.urlopen(f"http://{LOOPBACK}:{web}/login", timeout=10) as page:
            assert page.status == 200 and b"<form" in page.read()
        with urllib.request.urlopen(f"http://{LOOPBACK}:{web}/static/clerk.js", timeout=10) as js:
            assert js.read() == (ROOT / "templates" / "web" / "static" / "clerk.js").read_bytes()
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait(10)
        subprocess.run(
            [str(installed.mailsvc), "stack", "down"],
            cwd=outside,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
