"""The configuration `mailsvc init` writes for the system's slapd and Dovecot (DIR/system/), run
for real without touching /etc or systemd.

The production files (Debian's places, ports 389, 993 and 24) must parse: slapd's own check, and
Dovecot's reading of Debian's stock dovecot.conf (a copy) with the drop-in installed and the next
steps' sed applied. Then the same installation's files are rendered again with temporary places
and loopback ports (SystemLayout and the settings' environment overrides), installed as the next
steps install them into temporary directories, and slapd and Dovecot are started from exactly
those files: `mailsvc check` with the production config passes, and a councillor added with the
CLI reads the welcome message, delivered over LMTP, through IMAPS with a verified certificate (a
self-signed one standing in for certbot's)."""

from __future__ import annotations

import contextlib
import grp
import imaplib
import io
import json
import os
import pwd
import re
import shlex
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailsvc import mailstore, secret_store
from mailsvc.cli.main import main
from mailsvc.config import Settings, load_settings
from mailsvc.relay.smtp.tls import ensure_self_signed
from mailsvc.stack import configs, free_ports, system
from mailsvc.stack.configs import DovecotIdentity
from mailsvc.stack.layout import Paths, make_traversable, private_dir, remove_private_dir, tail
from mailsvc.stack.supervise import accepts, alive, banner, ldap_bind, spawn, terminate

# Not in the PostgreSQL pass (make test-postgresql): the system's slapd and Dovecot only.
pytestmark = pytest.mark.no_database

DOMAIN = "rada.miasto.example"
STOCK_DOVECOT = Path("/etc/dovecot")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[Path, str]]:
    """One `mailsvc init` with production values: the scratch directory holding its ``srv``,
    and the next steps it printed. Short, in /tmp: Dovecot's socket paths must stay short and
    the mail user must be able to enter it."""
    root = Path(tempfile.mkdtemp(prefix="ms", dir="/tmp"))
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        for name in set(os.environ) - set(_clean_env()):
            mp.delenv(name)
        argv = ["init", str(root / "srv"), "--domain", DOMAIN, "--council-name", "Rada Testowa"]
        assert main([*argv, "--language", "en"]) == 0
    yield root, out.getvalue()
    shutil.rmtree(root, ignore_errors=True)


def _run(*argv: str | Path) -> str:
    done = subprocess.run(list(map(str, argv)), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _step_command(printed: str, start: str) -> list[str]:
    """The command of the next steps that starts with ``start``, split as a shell would."""
    [line] = [ln.strip() for ln in printed.splitlines() if ln.strip().startswith(start)]
    return shlex.split(line)


def test_the_production_files_parse_as_debians_servers_read_them(
    installed: tuple[Path, str], tmp_path: Path
) -> None:
    root, printed = installed
    files = root / "srv" / "system"
    slapd_conf = files / system.SLAPD_CONF
    text = slapd_conf.read_text()
    # slaptest tries the database's directory and the pid and args files by writing into them:
    # those paths (the system's, Debian's init script reads the pid file's) move into tmp_path.
    for old, new in (
        ('directory "/var/lib/ldap"', f'directory "{tmp_path}"'),
        ('pidfile "/var/run/slapd/slapd.pid"', f'pidfile "{tmp_path}/slapd.pid"'),
        ('argsfile "/var/run/slapd/slapd.args"', f'argsfile "{tmp_path}/slapd.args"'),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    slapd_conf = tmp_path / "slapd.conf"
    slapd_conf.write_text(text)
    assert "config file testing succeeded" in _run("slaptest", "-u", "-f", slapd_conf)

    # Debian's dovecot.conf (a copy) with the drop-in installed and the printed sed applied, as
    # step 6 says. Its private keys and the sample files that it does not include and only root
    # may read are not needed.
    def unreadable(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "private" or not os.access(Path(directory, n), os.R_OK)]

    etc = tmp_path / "dovecot"
    shutil.copytree(STOCK_DOVECOT, etc, ignore=unreadable)
    shutil.copy(files / system.DOVECOT_CONF, etc / "conf.d")
    sed = _step_command(printed, "sed -i 's/^!include auth-system")
    assert sed[-1] == "/etc/dovecot/conf.d/10-auth.conf"
    _run(*sed[:-1], etc / "conf.d" / "10-auth.conf")

    def setting(*names: str) -> list[str]:
        return _run("doveconf", "-c", etc / "dovecot.conf", "-h", *names).splitlines()

    ldap_conf = "/etc/dovecot/dovecot-ldap-mailsvc.conf.ext"
    # Only mailsvc's passdbs and userdb: Debian's PAM and passwd ones are gone.
    assert setting("passdb/0/driver", "passdb/0/master", "passdb/0/args") == [
        "passwd-file",
        "yes",
        "scheme=SSHA /etc/dovecot/mailsvc-master-users",
    ]
    assert setting("passdb/1/driver", "passdb/1/args", "userdb/0/driver", "userdb/0/args") == [
        "ldap",
        ldap_conf,
        "ldap",
        ldap_conf,
    ]
    dump = _run("doveconf", "-c", etc / "dovecot.conf", "-n").splitlines()
    assert (dump.count("passdb {"), dump.count("userdb {")) == (2, 1)
    assert setting(
        "ssl",
        "ssl_min_protocol",
        "ssl_cert",
        "mail_location",
        "mail_uid",
        "auth_failure_delay",
        "service/imap-login/inet_listener/imap/port",
        "service/imap-login/inet_listener/imaps/port",
        "service/lmtp/inet_listener/lmtp/address",
        "service/lmtp/inet_listener/lmtp/port",
    ) == [
        "required",
        "TLSv1.2",
        "</etc/letsencrypt/live/mail.rada.miasto.example/fullchain.pem",
        "maildir:/var/vmail/%d/%n",
        "vmail",
        "2 secs",
        "0",
        "993",
        "127.0.0.1",
        "24",
    ]
    ldap_text = (files / system.DOVECOT_LDAP_CONF).read_text()
    assert "uris = ldap://127.0.0.1:389\n" in ldap_text
    assert "=uid=vmail,=gid=vmail,=home=/var/vmail/%d/%n" in ldap_text


def _mail_owner(who: DovecotIdentity) -> tuple[str, str]:
    """The test's stand-in for the user vmail (no user may be created here): as root the
    system user "mail" (the local stack's choice), otherwise whoever runs the tests."""
    if who.as_root:
        return "mail", "mail"
    return pwd.getpwuid(who.mail_uid).pw_name, grp.getgrgid(who.mail_gid).gr_name


def _install(source: Path, target_dir: Path, mode: int, group: int | None = None) -> Path:
    """`install -m MODE [-g GROUP] SOURCE TARGET_DIR/`."""
    target = target_dir / source.name
    shutil.copyfile(source, target)
    if group is not None and os.geteuid() == 0:
        os.chown(target, 0, group)
    target.chmod(mode)
    return target


def _wait_ready(settings: Settings, pids: dict[str, int], logs: dict[str, Path]) -> None:
    host, lmtp_port = settings.lmtp_address
    d = settings.directory
    reader = secret_store.reader_password(settings)
    pending: dict[str, Callable[[], bool]] = {
        "slapd": lambda: ldap_bind(settings.ldap_url, d.reader_dn, reader) == 0,
        "dovecot": lambda: (
            accepts(host, settings.clients.imap_port)
            and banner(host, lmtp_port, b"220", quit_command=b"QUIT\r\n")
        ),
    }
    deadline = time.monotonic() + 30
    while pending:
        for name, ready in list(pending.items()):
            assert alive(pids[name]), f"{name} exited: {tail(logs[name], 20)}"
            if ready():
                del pending[name]
        assert time.monotonic() < deadline, f"not answering: {pending}"
        time.sleep(0.05)


def test_a_councillor_reads_mail_over_imaps_from_servers_run_from_the_system_files(
    installed: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = installed[0]
    config = root / "srv" / "mailsvc.toml"
    ldap_port, imaps_port, lmtp_port = free_ports(3)
    cert, key = ensure_self_signed(root / "tls", "127.0.0.1")
    for name in set(os.environ) - set(_clean_env()):
        monkeypatch.delenv(name)
    # The production config, its addresses and certificate pointed at the test's.
    for name, value in {
        "MAILSVC_DIRECTORY__URL": f"ldap://127.0.0.1:{ldap_port}",
        "MAILSVC_DELIVERY__LMTP_PORT": str(lmtp_port),
        "MAILSVC_CLIENTS__IMAP_PORT": str(imaps_port),
        "MAILSVC_SMTP__TLS_CERT": str(cert),
        "MAILSVC_SMTP__TLS_KEY": str(key),
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config)
    who = DovecotIdentity.current()
    etc = root / "etc-dovecot"
    layout = system.SystemLayout(
        ldap_data=root / "ldap-data",
        slapd_run_dir=root / "slapd-run",
        dovecot_dir=etc,
        mail_root=root / "vmail",
        mail_owner=_mail_owner(who),
        listen="127.0.0.1",
        first_valid=(who.mail_uid, who.mail_gid),
    )
    files = root / "system"
    system.write(settings, files, layout)

    # Step 5: the database from base.ldif, slapd.d converted from slapd.conf; slapd started
    # as Debian's init script starts it (-F slapd.d, -h SLAPD_SERVICES).
    slapd_d = root / "slapd.d"
    for directory in (layout.ldap_data, slapd_d, layout.slapd_run_dir):
        directory.mkdir(mode=0o750)
    _run("slapadd", "-f", files / system.SLAPD_CONF, "-l", files / system.BASE_LDIF)
    assert "config file testing succeeded" in _run(
        "slaptest", "-f", files / system.SLAPD_CONF, "-F", slapd_d
    )
    # Step 6: the drop-in and the private files installed, the mailboxes' directory made.
    (etc / "conf.d").mkdir(parents=True)
    drop_in = _install(files / system.DOVECOT_CONF, etc / "conf.d", 0o644)
    for private in (system.DOVECOT_LDAP_CONF, system.MASTER_USERS):
        _install(files / private, etc, 0o640, group=who.internal_gid)
    layout.mail_root.mkdir(mode=0o700)
    if who.as_root:
        os.chown(layout.mail_root, who.mail_uid, who.mail_gid)
        make_traversable(root, who.mail_uid, who.mail_gid)
    # Dovecot's own settings (Debian's dovecot.conf on a server) come from the local stack's
    # dovecot.conf for this scratch directory, including the installed drop-in.
    paths = Paths.of(root)
    for directory in (paths.dovecot_dir, paths.dovecot_state, paths.log_dir):
        directory.mkdir(exist_ok=True)
    private_dir(paths.dovecot_base)
    paths.dovecot_conf.write_text(configs.dovecot_conf(paths, who, drop_in))

    logs = {"slapd": paths.log("slapd"), "dovecot": paths.log("dovecot")}
    argv = {
        "slapd": ["/usr/sbin/slapd", "-F", str(slapd_d), "-h", f"ldap://127.0.0.1:{ldap_port}/"],
        "dovecot": ["/usr/sbin/dovecot", "-F", "-c", str(paths.dovecot_conf)],
    }
    argv["slapd"] += ["-d", "none"]  # in the foreground, as the local stack runs it
    pids: dict[str, int] = {}
    try:
        for name in ("slapd", "dovecot"):
            pids[name] = spawn(argv[name], logs[name])
        _wait_ready(settings, pids, logs)

        capsys.readouterr()
        assert main(["--config", str(config), "check"]) == 0, capsys.readouterr().out
        checked = capsys.readouterr().out
        assert re.search(rf"^directory +OK +ldap://127.0.0.1:{ldap_port}$", checked, re.M)
        assert re.search(rf"^mailstore +OK +lmtp 127.0.0.1:{lmtp_port}$", checked, re.M)

        # A councillor through the service's CLI: the directory entry, and the welcome
        # message delivered through Dovecot's LMTP.
        add = ["councillors", "add", "--given-name", "Anna", "--surname", "Nowak", "--json"]
        assert main(["--config", str(config), *add]) == 0
        account = json.loads(capsys.readouterr().out)
        address, password = account["address"], account["password"]

        context = ssl.create_default_context(cafile=str(cert))
        with imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=context, timeout=10) as imap:
            assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
            imap.login(address, password)
            assert imap.select("INBOX", readonly=True) == ("OK", [b"1"])
            _, fetched = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (TO)])")
            header = b"".join(part[1] for part in fetched if isinstance(part, tuple))
            assert header.startswith(b"To: Anna Nowak <" + address.encode() + b">")
        # The service's master user opens the same mailbox, from this machine.
        login, secret = mailstore.master_credentials(settings, address)
        with imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=context, timeout=10) as imap:
            imap.login(login, secret)
            assert imap.select("INBOX", readonly=True) == ("OK", [b"1"])
        local_part = address.split("@")[0]
        maildir = layout.mail_root / DOMAIN / local_part
        assert maildir.stat().st_uid == who.mail_uid
    finally:
        # Dovecot first: it would log the directory's going away.
        for name in ("dovecot", "slapd"):
            if name in pids:
                terminate({name: pids[name]})
        if paths.base_dir_is_external:
            remove_private_dir(paths.dovecot_base)
