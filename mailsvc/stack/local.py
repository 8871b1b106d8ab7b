"""Start and stop a real local OpenLDAP slapd and Dovecot (IMAP + LMTP) from ``var_dir``.

Used by the embedded default (`mailsvc stack up`) and by the integration tests. Nothing here touches
/etc or systemd: configuration, directory data, mailboxes, logs and pid files all live under
``settings.var_dir``; only Dovecot's socket directory moves to a short path in /tmp when var_dir is
too deep for Unix socket names.

Layout::

    var_dir/ldap/slapd.conf, data/, initialized    directory configuration and database
    var_dir/dovecot/dovecot.conf, dovecot-ldap.conf.ext, master-users, state/, run/
    var_dir/mail/<domain>/<local part>/            Maildirs
    var_dir/log/slapd.log, dovecot.log
    var_dir/run/slapd.pid, dovecot.pid, stack.lock

Configuration files are rewritten on every start, so changed settings (ports, passwords) apply
after a restart; the directory database is created once and kept.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import grp
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailsvc import secret_store
from mailsvc.config import DirectorySettings, Settings
from mailsvc.errors import MailsvcError
from mailsvc.mailstore import MASTER_USER, master_secret
from provisioning.passwords import hash_password

INSTALL_COMMAND = (
    "apt-get update && apt-get install -y slapd ldap-utils dovecot-imapd dovecot-lmtpd dovecot-ldap"
)
SERVICES = ("slapd", "dovecot")

_SCHEMA_DIR = Path("/etc/ldap/schema")
_SCHEMAS = ("core", "cosine", "inetorgperson")
_LDAP_MODULE_DIR = Path("/usr/lib/ldap")
# Parts of the Debian packages that are not the configured executables.
_SUPPORT_FILES = (
    _LDAP_MODULE_DIR / "back_mdb.so",
    *(_SCHEMA_DIR / f"{name}.schema" for name in _SCHEMAS),
    Path("/usr/lib/dovecot/imap"),
    Path("/usr/lib/dovecot/lmtp"),
    Path("/usr/lib/dovecot/modules/auth/libauthdb_ldap.so"),
)
_MDB_MAXSIZE = 1 << 30  # 1 GiB map: far above a council's directory, sparse on disk
_POLL_INTERVAL = 0.005
_STOP_TIMEOUT = 10.0
_PROBE_TIMEOUT = 1.0
_LOG_TAIL_LINES = 15
_LDAP_NOT_YET = {51, 52, 80}  # busy, unavailable, other: slapd is still coming up
# sun_path holds 108 bytes including the NUL; Dovecot's longest socket name below base_dir is
# about 30 bytes ("login/imap-urlauth-worker" and friends), so keep a margin.
_SUN_PATH_MAX = 107
_SOCKET_NAME_RESERVE = 40
# Characters that would need quoting or mean something (variables, list separators) in slapd or
# Dovecot configuration files; var_dir must not contain them.
_UNSAFE_PATH = re.compile(r"[\s\"'\\%$#{},:;=]")


class StackError(MailsvcError):
    """The local stack could not be started, checked or stopped; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    port_info: str


@dataclass(frozen=True)
class _Paths:
    var_dir: Path
    ldap_dir: Path
    slapd_conf: Path
    base_ldif: Path
    ldap_data: Path
    ldap_initialized: Path
    dovecot_dir: Path
    dovecot_conf: Path
    dovecot_ldap_conf: Path
    master_users: Path
    dovecot_state: Path
    dovecot_base: Path
    mail_root: Path
    log_dir: Path
    run_dir: Path
    lock: Path

    @classmethod
    def of(cls, var_dir: Path) -> _Paths:
        ldap_dir = var_dir / "ldap"
        dovecot_dir = var_dir / "dovecot"
        run_dir = var_dir / "run"
        base = dovecot_dir / "run"
        if len(os.fsencode(base)) + _SOCKET_NAME_RESERVE > _SUN_PATH_MAX:
            digest = hashlib.sha256(os.fsencode(var_dir)).hexdigest()[:8]
            base = Path(f"/tmp/mailsvc-{digest}")  # noqa: S108 - checked in _private_dir
        return cls(
            var_dir=var_dir,
            ldap_dir=ldap_dir,
            slapd_conf=ldap_dir / "slapd.conf",
            base_ldif=ldap_dir / "base.ldif",
            ldap_data=ldap_dir / "data",
            ldap_initialized=ldap_dir / "initialized",
            dovecot_dir=dovecot_dir,
            dovecot_conf=dovecot_dir / "dovecot.conf",
            dovecot_ldap_conf=dovecot_dir / "dovecot-ldap.conf.ext",
            master_users=dovecot_dir / "master-users",
            dovecot_state=dovecot_dir / "state",
            dovecot_base=base,
            mail_root=var_dir / "mail",
            log_dir=var_dir / "log",
            run_dir=run_dir,
            lock=run_dir / "stack.lock",
        )

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    @property
    def base_dir_is_external(self) -> bool:
        return not self.dovecot_base.is_relative_to(self.var_dir)


class LocalStack:
    """The local slapd and Dovecot of one var_dir: configure, start, check, stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = _Paths.of(settings.var_dir.absolute())

    # -- public API ----------------------------------------------------------------------

    def up(self) -> list[ServiceStatus]:
        """Start whatever is not running and return once both servers answer (idempotent)."""
        with self._locked():
            self._start(SERVICES)
        return self.status()

    def down(self) -> list[str]:
        """Stop the servers this var_dir runs and wait until they are gone; return their names."""
        with self._locked():
            return self._stop(("dovecot", "slapd"))

    def status(self) -> list[ServiceStatus]:
        """Each server: running means our process is alive and listening on all its ports."""
        statuses = []
        for name in SERVICES:
            pid = self._running_pid(name)
            # Look at the listening sockets instead of connecting: a connection would make
            # Dovecot start a login process, and one still starting delays a shutdown by 5 s.
            answering = pid is not None and all(
                _listens(pid, port) for _, port in self._ports(name)
            )
            statuses.append(ServiceStatus(name, answering, pid, self._port_info(name)))
        return statuses

    def start_service(self, name: str) -> None:
        """Start one server ("slapd" or "dovecot") if it is not running; wait until it answers."""
        self._check_name(name)
        with self._locked():
            self._start((name,))

    def stop_service(self, name: str) -> None:
        """Stop one server ("slapd" or "dovecot") if it is running; wait until it is gone."""
        self._check_name(name)
        with self._locked():
            self._stop((name,))

    def missing_binaries(self) -> list[str]:
        """Executables and package files the stack needs but this machine lacks."""
        stack = self.settings.stack
        executables = (stack.slapd, stack.slaptest, stack.slapadd, stack.dovecot)
        missing = [exe for exe in executables if shutil.which(exe) is None]
        return missing + [str(path) for path in _SUPPORT_FILES if not path.exists()]

    # -- starting ------------------------------------------------------------------------

    def _start(self, names: Sequence[str]) -> None:
        missing = self.missing_binaries()
        if missing:
            raise StackError(
                f"the local stack needs {', '.join(missing)}, which this machine lacks; "
                f"install them with: {INSTALL_COMMAND}"
            )
        self._prepare_dirs()
        deadline = time.monotonic() + self.settings.stack.start_timeout
        launched: dict[str, int] = {}
        waiting: dict[str, int] = {}
        try:
            for name in names:
                pid = self._running_pid(name)
                if pid is None:
                    pid = self._launch(name)
                    launched[name] = pid
                waiting[name] = pid
            self._wait_ready(waiting, launched, deadline)
            if "slapd" in names:
                self._sync_reader_password()
        except BaseException:
            # Leave things as they were: what this call started goes away again.
            self._stop(list(launched))
            raise

    def _launch(self, name: str) -> int:
        for label, port in self._ports(name):
            self._check_port_free(name, label, port)
        if name == "slapd":
            self._configure_slapd()
        else:
            self._configure_dovecot()
        argv = self._argv(name)
        log = self.paths.log(name)
        _append(log, f"--- mailsvc: starting {' '.join(argv)}\n")
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (
                        os.POSIX_SPAWN_OPEN,
                        1,
                        str(log),
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                        0o640,
                    ),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                # Own session: the server outlives the command that started it and does not get
                # the terminal's Ctrl-C. Python ignores SIGPIPE; the server must not inherit that.
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                setsigmask=(),
            )
        except OSError as exc:
            raise StackError(f"could not start {argv[0]}: {exc.strerror}") from exc
        _SPAWNED.add(pid)
        _write_atomic(self.paths.pid_file(name), f"{pid}\n", 0o644)
        return pid

    def _wait_ready(
        self, waiting: dict[str, int], launched: dict[str, int], deadline: float
    ) -> None:
        pending = dict(waiting)
        while pending:
            for name, pid in list(pending.items()):
                if not _alive(pid):
                    self.paths.pid_file(name).unlink(missing_ok=True)
                    raise StackError(f"{name} exited while starting; {self._log_hint(name)}")
                if self._answers(name):
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                name, pid = next(iter(pending.items()))
                started = "started" if name in launched else "was already running"
                raise StackError(
                    f"{name} (pid {pid}) {started} but did not answer within "
                    f"{self.settings.stack.start_timeout:g} s (stack.start_timeout); "
                    f"{self._log_hint(name)}; stop it with `mailsvc stack down` and try again"
                )
            time.sleep(_POLL_INTERVAL)

    def _answers(self, name: str) -> bool:
        host = self.settings.stack.host
        if name == "slapd":
            return _accepts(host, self.settings.stack.ldap_port) and self._ldap_bind_ok()
        return _banner(host, self.settings.stack.imap_port, b"* OK") and _banner(
            host, self.settings.stack.lmtp_port, b"220", quit_command=b"QUIT\r\n"
        )

    def _check_port_free(self, name: str, label: str, port: int) -> None:
        host = self.settings.stack.host
        if not _port_in_use(host, port):
            return
        owner = _listener_owner(port)
        by = f" by {owner}" if owner else " by another program"
        setting = {"ldap": "ldap_port", "imap": "imap_port", "lmtp": "lmtp_port"}[label]
        raise StackError(
            f"cannot start {name}: {label} port {host}:{port} is already in use{by}; "
            f"stop that program or choose another port with stack.{setting} "
            f"(MAILSVC_STACK__{setting.upper()})"
        )

    # -- stopping ------------------------------------------------------------------------

    def _stop(self, names: Sequence[str]) -> list[str]:
        targets = {name: pid for name in names if (pid := self._running_pid(name)) is not None}
        for pid in targets.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # Each server leads its own process group (its session): wait for all of it, so that
        # no Dovecot child still holds a port when this returns.
        if not _wait_groups_gone(list(targets.values()), _STOP_TIMEOUT):
            for pid in targets.values():
                _kill_group(pid)
            if not _wait_groups_gone(list(targets.values()), _STOP_TIMEOUT):
                raise StackError(
                    f"{', '.join(targets)} did not stop even after SIGKILL "
                    f"(process groups {', '.join(map(str, targets.values()))}); "
                    "look at them with `ps -eo pid,pgid,stat,cmd`"
                )
        for name in names:
            self.paths.pid_file(name).unlink(missing_ok=True)
        if "dovecot" in names and self.paths.base_dir_is_external:
            _remove_private_dir(self.paths.dovecot_base)
        return [name for name in names if name in targets]

    # -- process identity ----------------------------------------------------------------

    def _argv(self, name: str) -> list[str]:
        stack = self.settings.stack
        if name == "slapd":
            exe = shutil.which(stack.slapd) or stack.slapd
            # "-d none" keeps slapd in the foreground and prints only messages that are always
            # logged (start-up, fatal errors) to stderr; "-d 0" would hide even a failed bind().
            url = f"ldap://{_url_host(stack.host)}:{stack.ldap_port}/"
            return [exe, "-f", str(self.paths.slapd_conf), "-h", url, "-d", "none"]
        exe = shutil.which(stack.dovecot) or stack.dovecot
        return [exe, "-F", "-c", str(self.paths.dovecot_conf)]

    def _running_pid(self, name: str) -> int | None:
        """The pid of this var_dir's server ``name`` if it runs. Pids get reused, so a pid counts
        only while /proc/PID/cmdline still shows our executable with our configuration file."""
        argv = self._argv(name)
        executable = Path(argv[0]).name
        config = str(self.paths.slapd_conf if name == "slapd" else self.paths.dovecot_conf)

        def ours(pid: int) -> bool:
            cmdline = _cmdline(pid)  # empty for zombies and vanished processes
            return bool(cmdline) and Path(cmdline[0]).name == executable and config in cmdline

        pid_file = self.paths.pid_file(name)
        try:
            pid = int(pid_file.read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid > 0 and ours(pid) and _alive(pid):
            return pid
        pid_file.unlink(missing_ok=True)
        # A server of this var_dir whose pid file was lost (e.g. var_dir/run cleaned by hand).
        for candidate in _all_pids():
            if ours(candidate) and _alive(candidate):
                _write_atomic(pid_file, f"{candidate}\n", 0o644)
                return candidate
        return None

    # -- slapd ---------------------------------------------------------------------------

    def _configure_slapd(self) -> None:
        paths = self.paths
        directory = self.settings.directory
        rootpw = hash_password(secret_store.admin_password(self.settings))
        _write_atomic(paths.slapd_conf, _slapd_conf(self.settings, paths, rootpw), 0o600)
        try:
            created_for = paths.ldap_initialized.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            created_for = None
            # Not (completely) initialised yet: start from an empty database.
            shutil.rmtree(paths.ldap_data, ignore_errors=True)
        if created_for is not None and created_for.lower() != directory.base_dn.lower():
            raise StackError(
                f"the directory in {paths.ldap_data} was created for base_dn {created_for!r}, "
                f"but directory.base_dn is {directory.base_dn!r}; set it back, or remove "
                f"{paths.ldap_data} and {paths.ldap_initialized} to start an empty directory"
            )
        paths.ldap_data.mkdir(mode=0o700, exist_ok=True)
        result = _run([self.settings.stack.slaptest, "-u", "-f", str(paths.slapd_conf)])
        if result.returncode != 0:
            raise StackError(
                f"slapd configuration {paths.slapd_conf} is invalid (slaptest):\n"
                f"{result.stdout.strip()}\ncheck the [directory] settings"
            )
        if created_for is not None:
            return
        reader_hash = hash_password(secret_store.reader_password(self.settings))
        _write_atomic(paths.base_ldif, _base_ldif(directory, reader_hash), 0o600)
        result = _run(
            [
                self.settings.stack.slapadd,
                "-q",
                "-f",
                str(paths.slapd_conf),
                "-l",
                str(paths.base_ldif),
            ]
        )
        if result.returncode != 0:
            raise StackError(
                f"could not create the directory's base entries with slapadd:\n"
                f"{result.stdout.strip()}\ncheck directory.base_dn, councillors_rdn and reader_dn"
            )
        _write_atomic(paths.ldap_initialized, f"{directory.base_dn}\n", 0o600)
        paths.base_ldif.unlink()  # its reader hash goes stale when the password changes

    def _ldap_bind_ok(self) -> bool:
        directory = self.settings.directory
        code = _ldap_bind(self._local_ldap_url(), directory.admin_dn, self._admin_password())
        if code is None or code in _LDAP_NOT_YET:
            return False
        if code == 0:
            return True
        raise StackError(
            f"slapd at {self._local_ldap_url()} refuses the admin bind as {directory.admin_dn} "
            f"(LDAP result {code}): it runs with an older configuration; "
            "stop it with `mailsvc stack down` and start the stack again"
        )

    def _sync_reader_password(self) -> None:
        """Make the reader entry's password match the settings (they may change after init)."""
        import ldap3  # slow import, needed only here

        directory = self.settings.directory
        password = secret_store.reader_password(self.settings)
        if _ldap_bind(self._local_ldap_url(), directory.reader_dn, password) == 0:
            return
        conn = _ldap_connection(self._local_ldap_url(), directory.admin_dn, self._admin_password())
        try:
            ok = conn.bind() and conn.modify(
                directory.reader_dn,
                {"userPassword": [(ldap3.MODIFY_REPLACE, [hash_password(password)])]},
            )
            if not ok:
                raise StackError(
                    f"could not set the password of {directory.reader_dn}: "
                    f"{conn.result.get('description')}; check directory.reader_dn"
                )
        finally:
            conn.unbind()

    def _local_ldap_url(self) -> str:
        stack = self.settings.stack
        return f"ldap://{_url_host(stack.host)}:{stack.ldap_port}"

    def _admin_password(self) -> str:
        return secret_store.admin_password(self.settings)

    # -- Dovecot -------------------------------------------------------------------------

    def _configure_dovecot(self) -> None:
        paths = self.paths
        identity = _DovecotIdentity.current()
        _private_dir(paths.dovecot_base)
        paths.dovecot_state.mkdir(mode=0o750, exist_ok=True)
        paths.mail_root.mkdir(mode=0o700, exist_ok=True)
        if identity.as_root:
            os.chown(paths.mail_root, identity.mail_uid, identity.mail_gid)
            _make_traversable(paths.var_dir, identity.mail_uid, identity.mail_gid)
        # The auth process runs as Dovecot's internal user and reads these files.
        secret = master_secret(self.settings)
        _write_atomic(
            paths.master_users,
            f"{MASTER_USER}:{hash_password(secret)}\n",
            0o640,
            group=identity.internal_gid,
        )
        _write_atomic(
            paths.dovecot_ldap_conf,
            _dovecot_ldap_conf(self.settings, paths, identity),
            0o640,
            group=identity.internal_gid,
        )
        _write_atomic(paths.dovecot_conf, _dovecot_conf(self.settings, paths, identity), 0o644)

    # -- helpers -------------------------------------------------------------------------

    def _ports(self, name: str) -> list[tuple[str, int]]:
        stack = self.settings.stack
        if name == "slapd":
            return [("ldap", stack.ldap_port)]
        return [("imap", stack.imap_port), ("lmtp", stack.lmtp_port)]

    def _port_info(self, name: str) -> str:
        host = _url_host(self.settings.stack.host)
        return ", ".join(f"{label} {host}:{port}" for label, port in self._ports(name))

    def _log_hint(self, name: str) -> str:
        log = self.paths.log(name)
        tail = _tail(log, _LOG_TAIL_LINES)
        return f"last lines of {log}:\n{tail}" if tail else f"{log} is empty"

    def _prepare_dirs(self) -> None:
        paths = self.paths
        bad = _UNSAFE_PATH.search(str(paths.var_dir))
        if bad:
            raise StackError(
                f"var_dir = {str(paths.var_dir)!r}: the local stack cannot use a path containing "
                f"{bad.group()!r}; choose a var_dir without spaces or punctuation"
            )
        paths.var_dir.mkdir(parents=True, exist_ok=True)
        paths.ldap_dir.mkdir(mode=0o700, exist_ok=True)
        paths.dovecot_dir.mkdir(mode=0o755, exist_ok=True)
        paths.log_dir.mkdir(mode=0o750, exist_ok=True)
        paths.run_dir.mkdir(mode=0o755, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise up/down of one var_dir across processes (two CLIs, tests and a CLI)."""
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in SERVICES:
            raise StackError(f"unknown service {name!r}: expected one of {', '.join(SERVICES)}")


# -- configuration files -------------------------------------------------------------------


def _slapd_conf(settings: Settings, paths: _Paths, rootpw_hash: str) -> str:
    d = settings.directory
    schemas = "\n".join(f"include {_quote(str(_SCHEMA_DIR / f'{n}.schema'))}" for n in _SCHEMAS)
    reader = _quote(d.reader_dn)
    return f"""\
# Generated by mailsvc (mailsvc/stack/local.py) on every start; edits are overwritten.
{schemas}

modulepath {_quote(str(_LDAP_MODULE_DIR))}
moduleload back_mdb

# Clients may discover the naming context and the schema.
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read

database mdb
maxsize {_MDB_MAXSIZE}
suffix {_quote(d.base_dn)}
rootdn {_quote(d.admin_dn)}
rootpw {rootpw_hash}
directory {_quote(str(paths.ldap_data))}

index objectClass eq
index mail,uid,cn,member eq

# Passwords are only ever compared (bind) or changed by their owner.
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
# The mailbox store's reader sees everything else; nobody else sees anything (the rootdn,
# used for provisioning, is not subject to access rules).
access to *
    by dn.exact={reader} read
    by * none
"""


def _base_ldif(d: DirectorySettings, reader_hash: str) -> str:
    """The entries a new directory starts with: suffix, containers and the reader entry."""
    base = _parse_dn(d.base_dn)
    entries: list[list[tuple[str, str]]] = [_suffix_entry(base)]
    created = {_dn_key(base)}

    def below_base(dn: str, setting: str) -> list[tuple[str, str]]:
        """``dn`` parsed, after adding the containers between it and the base entry."""
        rdns = _parse_dn(dn)
        if len(rdns) <= len(base) or _dn_key(rdns[-len(base) :]) != _dn_key(base):
            raise StackError(f"directory.{setting} = {dn!r}: expected a DN below {d.base_dn!r}")
        for depth in range(len(rdns) - len(base) - 1, 0, -1):
            parent = rdns[depth:]
            if _dn_key(parent) not in created:
                entries.append(_container_entry(parent))
                created.add(_dn_key(parent))
        return rdns

    groups_dn = f"ou=groups,{d.base_dn}"
    for dn, setting in ((d.councillors_dn, "councillors_rdn"), (groups_dn, "base_dn")):
        rdns = below_base(dn, setting)
        if _dn_key(rdns) not in created:
            entries.append(_container_entry(rdns))
            created.add(_dn_key(rdns))
    reader = below_base(d.reader_dn, "reader_dn")
    attr, value = reader[0]
    if attr.lower() != "cn":
        raise StackError(f"directory.reader_dn = {d.reader_dn!r}: expected a cn=... entry")
    entries.append(
        [
            ("dn", _format_dn(reader)),
            ("objectClass", "organizationalRole"),
            ("objectClass", "simpleSecurityObject"),
            ("cn", value),
            ("description", "mailsvc: the mailbox store reads the directory as this entry"),
            ("userPassword", reader_hash),
        ]
    )
    return "\n".join("".join(_ldif_line(a, v) for a, v in entry) for entry in entries)


def _suffix_entry(rdns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    attr, value = rdns[0]
    dn = ("dn", _format_dn(rdns))
    if attr.lower() == "dc":
        org = ".".join(v for a, v in rdns if a.lower() == "dc")
        return [
            dn,
            ("objectClass", "dcObject"),
            ("objectClass", "organization"),
            ("dc", value),
            ("o", org),
        ]
    if attr.lower() in ("o", "ou"):
        return _container_entry(rdns)
    raise StackError(
        f"directory.base_dn = {_format_dn(rdns)!r}: the local stack can create a base entry "
        "named dc=, o= or ou= only"
    )


def _container_entry(rdns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    attr, value = rdns[0]
    classes = {"ou": "organizationalUnit", "o": "organization"}
    if attr.lower() not in classes:
        raise StackError(
            f"cannot create {_format_dn(rdns)!r}: the local stack creates ou= or o= containers only"
        )
    return [("dn", _format_dn(rdns)), ("objectClass", classes[attr.lower()]), (attr, value)]


@dataclass(frozen=True)
class _DovecotIdentity:
    """Whom Dovecot runs as: as root it switches users; otherwise everything is the caller."""

    as_root: bool
    mail_uid: int
    mail_gid: int
    internal_user: str
    internal_group: str
    internal_gid: int

    @classmethod
    def current(cls) -> _DovecotIdentity:
        if os.geteuid() == 0:
            try:
                mail = pwd.getpwnam("mail")
                internal = pwd.getpwnam("dovecot")
            except KeyError as exc:
                raise StackError(
                    f"the system users 'mail' and 'dovecot' are needed ({exc}); "
                    f"install Dovecot with: {INSTALL_COMMAND}"
                ) from None
            return cls(
                as_root=True,
                mail_uid=mail.pw_uid,
                mail_gid=mail.pw_gid,
                internal_user=internal.pw_name,
                internal_group=grp.getgrgid(internal.pw_gid).gr_name,
                internal_gid=internal.pw_gid,
            )
        me = pwd.getpwuid(os.geteuid())
        return cls(
            as_root=False,
            mail_uid=me.pw_uid,
            mail_gid=me.pw_gid,
            internal_user=me.pw_name,
            internal_group=grp.getgrgid(os.getegid()).gr_name,
            internal_gid=os.getegid(),
        )


def _dovecot_conf(settings: Settings, paths: _Paths, who: _DovecotIdentity) -> str:
    stack = settings.stack
    host = stack.host
    maildir = f"{paths.mail_root}/%d/%n"
    digest = hashlib.sha256(os.fsencode(paths.var_dir)).hexdigest()[:8]
    if who.as_root:
        # Dovecot will not keep mail as root: deliver and read as the system user "mail".
        identity = f"""\
mail_uid = mail
mail_gid = mail
first_valid_uid = {who.mail_uid}
first_valid_gid = {who.mail_gid}
"""
        login_chroot = anvil_chroot = ""
    else:
        # Without root nothing can switch users or chroot: everything runs as the caller.
        identity = f"""\
default_internal_user = {who.internal_user}
default_login_user = {who.internal_user}
default_internal_group = {who.internal_group}
first_valid_uid = {who.mail_uid}
first_valid_gid = {who.mail_gid}
"""
        login_chroot = "\n  chroot ="
        anvil_chroot = "\n  chroot ="
    log = paths.log("dovecot")
    return f"""\
# Generated by mailsvc (mailsvc/stack/local.py) on every start; edits are overwritten.
instance_name = mailsvc-{digest}
base_dir = {paths.dovecot_base}
state_dir = {paths.dovecot_state}
log_path = {log}
info_log_path = {log}

protocols = imap lmtp
listen = {host}
# Loopback only, so no TLS and plaintext logins are fine in the embedded default.
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Lu
# Tests and clerks try wrong passwords on purpose; answer at once and never lock anyone out.
auth_failure_delay = 0
auth_master_user_separator = *
# No statistics: nothing reads them, and a process that waits for the stats service during
# shutdown delays `down` by seconds.
stats_writer_socket_path =

{identity}
mail_location = maildir:{maildir}

service imap-login {{{login_chroot}
  inet_listener imap {{
    address = {host}
    port = {stack.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}

service lmtp {{
  inet_listener lmtp {{
    address = {host}
    port = {stack.lmtp_port}
  }}
}}

service anvil {{{anvil_chroot}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

# "<mailbox>*{MASTER_USER}" with the master secret opens any existing mailbox.
passdb {{
  driver = passwd-file
  master = yes
  args = scheme=SSHA {paths.master_users}
}}

# Unknown and disabled councillors are refused at login and at LMTP RCPT alike.
passdb {{
  driver = ldap
  args = {paths.dovecot_ldap_conf}
}}
userdb {{
  driver = ldap
  args = {paths.dovecot_ldap_conf}
}}
"""


def _dovecot_ldap_conf(settings: Settings, paths: _Paths, who: _DovecotIdentity) -> str:
    d = settings.directory
    cls = _dovecot_filter_value(d.person_object_class)
    mail = d.mail_attribute
    active = (
        f"(&(objectClass={cls})({mail}=%u)"
        f"(!({d.status_attribute}={_dovecot_filter_value(d.disabled_value)})))"
    )
    return f"""\
# Generated by mailsvc (mailsvc/stack/local.py) on every start; edits are overwritten.
uris = {settings.ldap_url}
dn = {_dovecot_quote(d.reader_dn)}
dnpass = {_dovecot_quote(secret_store.reader_password(settings))}
ldap_version = 3
base = {_dovecot_quote(d.councillors_dn)}
scope = subtree
deref = never

# Passwords are checked by binding as the user's entry, so they never leave the directory.
auth_bind = yes
pass_filter = {active}
# No attribute may rename the user (the default maps uid to user), so LMTP and IMAP agree on
# the mailbox path.
pass_attrs =

user_filter = {active}
user_attrs = =uid={who.mail_uid},=gid={who.mail_gid},=home={paths.mail_root}/%d/%n

iterate_filter = (objectClass={cls})
iterate_attrs = {mail}=user
"""


# -- small pure helpers --------------------------------------------------------------------


def _quote(value: str) -> str:
    """A double-quoted slapd.conf argument."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dovecot_quote(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise StackError("directory settings must not contain line breaks")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dovecot_filter_value(value: str) -> str:
    """Escape a constant for an LDAP filter (RFC 4515) inside Dovecot's %-expanded template."""
    out = []
    for ch in value:
        if ch in "*()\\\0":
            out.append(f"\\{ord(ch):02x}")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def _parse_dn(dn: str) -> list[tuple[str, str]]:
    """Split a DN into (attribute, unescaped value) pairs; multi-valued RDNs are not needed."""
    rdns: list[tuple[str, str]] = []
    for part in _split_unescaped(dn, ","):
        pieces = _split_unescaped(part, "=", maxsplit=1)
        if len(pieces) != 2 or not pieces[0].strip() or _split_unescaped(part, "+")[1:]:
            raise StackError(f"cannot understand the DN {dn!r}: expected attr=value,attr=value")
        rdns.append((pieces[0].strip(), _unescape_dn_value(pieces[1].strip())))
    return rdns


def _split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep and maxsplit != 0:
            parts.append("".join(current))
            current = []
            maxsplit -= 1
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape_dn_value(value: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            pair = value[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                raw.append(int(pair, 16))
                i += 3
                continue
            raw += value[i + 1].encode()
            i += 2
            continue
        raw += value[i].encode()
        i += 1
    return raw.decode("utf-8")


def _escape_dn_value(value: str) -> str:
    out = "".join(f"\\{ch}" if ch in ',+"\\<>;=' else ch for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _format_dn(rdns: list[tuple[str, str]]) -> str:
    return ",".join(f"{attr}={_escape_dn_value(value)}" for attr, value in rdns)


def _dn_key(rdns: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((attr.lower(), value.lower()) for attr, value in rdns)


def _ldif_line(attr: str, value: str) -> str:
    safe = (
        value.isascii()
        and value == value.strip()
        and not value.startswith((":", "<"))
        and "\n" not in value
        and "\r" not in value
        and "\0" not in value
    )
    if safe:
        return f"{attr}: {value}\n"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}\n"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- file system ---------------------------------------------------------------------------


def _write_atomic(path: Path, text: str, mode: int, group: int | None = None) -> None:
    # Unique per writer: status() may record a pid file while another process does the same.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        if group is not None and os.geteuid() == 0:
            os.fchown(fd, 0, group)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(text)
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(tmp, path)


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _private_dir(path: Path) -> None:
    """Create ``path`` or accept it only if it is a real directory of ours that only we write.

    Dovecot wants its base_dir world-readable (0755); it must not be writable by anyone else,
    since a short one lives in /tmp.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)
    info = path.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise StackError(
            f"{path} exists but is not a private directory of this user; "
            "remove it (Dovecot keeps its sockets there) and start the stack again"
        )


def _remove_private_dir(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            shutil.rmtree(path, ignore_errors=True)


def _make_traversable(var_dir: Path, uid: int, gid: int) -> None:
    """Let the mail user reach var_dir/mail: var_dir may be 0700 (mkdtemp); parents must allow."""
    info = var_dir.stat()
    if not info.st_mode & stat.S_IXOTH:
        os.chmod(var_dir, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
    for parent in var_dir.parents:
        info = parent.stat()
        if info.st_mode & stat.S_IXOTH:
            continue
        if info.st_uid == uid and info.st_mode & stat.S_IXUSR:
            continue
        if info.st_gid == gid and info.st_mode & stat.S_IXGRP:
            continue
        raise StackError(
            f"Dovecot delivers mail as the user 'mail', who cannot enter {parent}; "
            f"allow it (chmod o+x {parent}) or choose a var_dir elsewhere"
        )


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a short tool (slaptest, slapadd); its stdout and stderr together in ``stdout``."""
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{' '.join(argv)} did not finish within 60 s") from exc


# -- processes -----------------------------------------------------------------------------


# Servers this process spawned: only these are ever reaped here (other children belong to
# whoever started them). Servers started by another process are reaped by init.
_SPAWNED: set[int] = set()


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    if pid in _SPAWNED:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped = pid
        if reaped == pid:
            _SPAWNED.discard(pid)
            return False
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after its closing one.
    return raw[raw.rfind(")") + 2 :].split()


def _proc_state(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [os.fsdecode(part) for part in raw.rstrip(b"\0").split(b"\0") if part]


def _all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _group_alive(pgid: int) -> bool:
    """Whether the server or anything in the process group it leads is still running."""
    if _alive(pgid):
        return True
    for pid in _all_pids():
        fields = _proc_stat(pid)
        if fields and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _wait_groups_gone(pgids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_group_alive(pgid) for pgid in pgids):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _kill_group(pid: int) -> None:
    """SIGKILL the server and, if it leads its process group (it does when we started it),
    everything in that group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


# -- network -------------------------------------------------------------------------------


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _banner(host: str, port: int, expected: bytes, quit_command: bytes = b"x LOGOUT\r\n") -> bool:
    """Whether the server on ``port`` greets with ``expected``."""
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT) as sock:
            greeting = b""
            while b"\n" not in greeting:
                chunk = sock.recv(512)
                if not chunk:
                    return False
                greeting += chunk
            with contextlib.suppress(OSError):
                sock.sendall(quit_command)
            return greeting.startswith(expected)
    except OSError:
        return False


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers do: a port held only by TIME_WAIT connections counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise StackError(f"cannot use {host}:{port}: {exc.strerror}; check stack.host") from exc
    return False


def _listening_sockets(port: int) -> set[str]:
    """Links (``socket:[inode]``) of the TCP sockets listening on ``port``, any address."""
    links = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    links.add(f"socket:[{inode}]")
    return links


def _open_files(pid: int) -> set[str]:
    fd_dir = f"/proc/{pid}/fd"
    links = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                links.add(os.readlink(f"{fd_dir}/{fd}"))
    return links


def _listens(pid: int, port: int) -> bool:
    sockets = _listening_sockets(port)
    return bool(sockets) and not sockets.isdisjoint(_open_files(pid))


def _listener_owner(port: int) -> str | None:
    """'pid N (command line)' of the process listening on ``port``, when /proc tells."""
    sockets = _listening_sockets(port)
    if sockets:
        for pid in _all_pids():
            if not sockets.isdisjoint(_open_files(pid)):
                return f"pid {pid} ({' '.join(_cmdline(pid))})"
    return None


def _ldap_connection(url: str, dn: str, password: str) -> Any:
    import ldap3  # slow import, needed only for the directory checks

    server = ldap3.Server(url, connect_timeout=_PROBE_TIMEOUT, get_info=ldap3.NONE)
    return ldap3.Connection(
        server,
        user=dn,
        password=password,
        receive_timeout=2,  # ldap3 packs it into SO_RCVTIMEO: must be an int
        raise_exceptions=False,
        auto_referrals=False,
    )


def _ldap_bind(url: str, dn: str, password: str) -> int | None:
    """The LDAP result code of a simple bind (0 = success), or None if nobody answers."""
    from ldap3.core.exceptions import LDAPException

    conn = _ldap_connection(url, dn, password)
    try:
        conn.bind()
    except (LDAPException, OSError):
        # ldap3 leaves the socket of a failed connect open.
        with contextlib.suppress(AttributeError, OSError):
            conn.socket.close()
        return None
    finally:
        with contextlib.suppress(LDAPException, OSError):
            conn.unbind()
    code = conn.result.get("result") if conn.result else None
    return code if isinstance(code, int) else None


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports the kernel just reported free on ``host`` (tests, benches)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
