"""Start and stop a real local directory (OpenLDAP slapd, or Samba's AD DC with
stack.directory = "samba") and Dovecot (IMAP + LMTP) from ``var_dir``.

Used by the embedded default (`mailsvc stack up`) and by the integration tests. Nothing here touches
/etc or systemd: configuration, directory data, mailboxes, logs and pid files all live under
``settings.var_dir`` (see mailsvc/stack/layout.py). The configuration files come from
templates/stack/ (mailsvc/stack/configs.py), the directory's first entries from
mailsvc/stack/ldif.py (slapd) or Samba's provisioning (mailsvc/stack/samba.py), and processes
and ports are handled by mailsvc/stack/supervise.py.

Configuration files are rewritten on every start, so changed settings (ports, passwords) apply
after a restart; the directory database is created once and kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailsvc import mailstore, secret_store
from mailsvc.config import Settings, is_loopback
from mailsvc.passwords import hash_new_password_blocking
from mailsvc.stack import certs, configs, ldif, samba
from mailsvc.stack.errors import INSTALL_COMMAND, SAMBA_INSTALL_COMMAND, StackError
from mailsvc.stack.layout import (
    Paths,
    make_traversable,
    private_dir,
    remove_private_dir,
    tail,
    write_atomic,
)
from mailsvc.stack.postgres import INSTALL_COMMAND as POSTGRES_INSTALL_COMMAND
from mailsvc.stack.postgres import PostgresCluster
from mailsvc.stack.supervise import (
    POLL_INTERVAL,
    accepts,
    alive,
    banner,
    find_running,
    ldap_bind,
    ldap_connection,
    listener_owner,
    listens,
    port_in_use,
    run,
    running_pid,
    spawn,
    terminate,
    url_host,
)
from provisioning.passwords import ssha_hash

# The servers of the default stack (stack.directory = "openldap").
SERVICES = ("slapd", "dovecot")
# Every server a var_dir may run: "samba" takes slapd's place with stack.directory = "samba";
# "postgres" runs with stack.database = "postgresql".
ALL_SERVICES = ("slapd", "samba", "dovecot", "postgres")
_DIRECTORY_SERVER = {"openldap": "slapd", "samba": "samba"}

_LOG_TAIL_LINES = 15
_LDAP_NOT_YET = {51, 52, 80}  # busy, unavailable, other: slapd is still coming up
# slapcat and slapadd of a whole directory: tens of thousands of entries take seconds.
_BULK_TIMEOUT = 3600.0


def _count_entries(ldif_file: Path) -> int:
    """Entries in slapcat's output: lines that start with "dn:" (counted in large blocks)."""
    count, tail = 0, b"\n"  # the file's first line starts a line too
    with ldif_file.open("rb") as fh:
        while block := fh.read(1 << 20):
            # The last three bytes of a block go with the next: "\ndn:" may straddle them.
            data = tail + block
            count += data.count(b"\ndn:")
            tail = data[-3:]
    return count


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    port_info: str


class LocalStack:
    """The local directory and Dovecot of one var_dir: configure, start, check, stop."""

    def __init__(self, settings: Settings, *, durable: bool = True) -> None:
        """``durable=False``: the PostgreSQL cluster runs without fsync (the tests' own)."""
        self.settings = settings
        self.paths = Paths.of(settings.var_dir.absolute())
        self.services: tuple[str, ...] = (_DIRECTORY_SERVER[settings.stack.directory], "dovecot")
        if settings.stack.database == "postgresql" and not settings.database.url:
            self.services += ("postgres",)  # the service's database: its own cluster
        self.postgres = PostgresCluster(settings, self.paths, durable=durable)

    # -- public API ----------------------------------------------------------------------

    def up(self) -> list[ServiceStatus]:
        """Start whatever is not running and return once both servers answer (idempotent)."""
        with self._locked():
            self._start(self.services)
        return self.status()

    def down(self) -> list[str]:
        """Stop the servers this var_dir runs and wait until they are gone; return their names.
        A directory server of the other stack.directory that still runs is stopped too."""
        with self._locked():
            return self._stop(("dovecot", "samba", "slapd", "postgres"))

    def status(self) -> list[ServiceStatus]:
        """Each server: running means our process is alive and listening on all its ports."""
        statuses = []
        for name in self.services:
            pid = self._running_pid(name)
            # Look at the listening sockets instead of connecting: a connection would make
            # Dovecot start a login process, and one still starting delays a shutdown by 5 s.
            answering = pid is not None and all(listens(pid, port) for _, port in self._ports(name))
            statuses.append(ServiceStatus(name, answering, pid, self._port_info(name)))
        return statuses

    def start_service(self, name: str) -> None:
        """Start one server ("slapd", "samba", "dovecot" or "postgres") if it is not running;
        wait until it answers."""
        self._check_name(name)
        with self._locked():
            self._start((name,))

    def stop_service(self, name: str) -> None:
        """Stop one server ("slapd", "samba", "dovecot" or "postgres") if it is running; wait
        until it is gone."""
        self._check_name(name)
        with self._locked():
            self._stop((name,))

    def export_directory(self, target: Path) -> int:
        """Write the directory's entries to ``target`` as LDIF with slapcat (safe while slapd
        runs: back_mdb gives slapcat a consistent read transaction); returns their number."""
        if not self.paths.ldap_initialized.exists():
            raise StackError(
                f"there is no local directory in {self.paths.ldap_data} to export "
                "(the stack was never started with this var_dir)"
            )
        slapcat = str(Path(self.settings.stack.slapadd).with_name("slapcat"))
        base_dn = self.settings.directory.base_dn
        argv = [slapcat, "-f", str(self.paths.slapd_conf), "-b", base_dn, "-l", str(target)]
        result = run(argv, timeout=_BULK_TIMEOUT)
        if result.returncode != 0:
            raise StackError(f"slapcat could not export the directory:\n{result.stdout.strip()}")
        return _count_entries(target)

    def load_directory(self, ldif_file: Path) -> None:
        """Create the directory from ``ldif_file`` (slapcat's output) instead of the base
        entries, before slapd first starts; `mailsvc stack up` then serves it."""
        with self._locked():
            if self._running_pid("slapd") is not None or self.paths.ldap_initialized.exists():
                raise StackError(
                    f"the local directory in {self.paths.ldap_data} already exists; it is "
                    "loaded only into a var_dir whose directory was never created"
                )
            self._prepare_dirs()
            self._configure_slapd(initial=ldif_file)

    def missing_binaries(self) -> list[str]:
        """Executables and package files the stack needs but this machine lacks."""
        stack = self.settings.stack
        executables = (stack.slapd, stack.slaptest, stack.slapadd, stack.dovecot)
        missing = [exe for exe in executables if shutil.which(exe) is None]
        missing += [str(path) for path in configs.SUPPORT_FILES if not path.exists()]
        if "samba" in self.services:
            missing += samba.missing_parts(self.settings)
        if "postgres" in self.services:
            missing += self.postgres.missing_binaries()
        return missing

    # -- starting ------------------------------------------------------------------------

    def _start(self, names: Sequence[str]) -> None:
        self._check_loopback()
        missing = self.missing_binaries()
        if missing:
            command = INSTALL_COMMAND
            if "samba" in self.services:
                command += f" && {SAMBA_INSTALL_COMMAND}"
            if "postgres" in self.services:
                command += f" && {POSTGRES_INSTALL_COMMAND.removeprefix('apt-get update && ')}"
            raise StackError(
                f"the local stack needs {', '.join(missing)}, which this machine lacks; "
                f"install them with: {command}"
            )
        self._prepare_dirs()
        launched: dict[str, int] = {}
        waiting: dict[str, int] = {}
        try:
            for name in names:
                pid = self._running_pid(name)
                if pid is None:
                    pid = self._launch(name)
                    launched[name] = pid
                waiting[name] = pid
            # Counted from here: provisioning Samba's domain (once) may itself take a minute.
            deadline = time.monotonic() + self.settings.stack.start_timeout
            self._wait_ready(waiting, launched, deadline)
            if "slapd" in names:
                self._sync_reader_password()
            if "samba" in names:
                samba.seed(self.settings, self.paths)
            if "postgres" in names:
                self.postgres.ensure_database()
        except BaseException:
            # Leave things as they were: what this call started goes away again.
            self._stop(list(launched), launched)
            raise

    def _launch(self, name: str) -> int:
        if name == "samba":
            samba.require_root()  # before probing its privileged ports
        ports = samba.PORTS if name == "samba" else self._ports(name)
        for label, port in ports:
            self._check_port_free(name, label, port)
        if name == "slapd":
            self._configure_slapd()
        elif name == "samba":
            samba.configure(self.settings, self.paths)
        elif name == "postgres":
            self.postgres.prepare()
        else:
            self._configure_dovecot()
        pid = spawn(self._argv(name), self.paths.log(name))
        write_atomic(self.paths.pid_file(name), f"{pid}\n", 0o644)
        return pid

    def _wait_ready(
        self, waiting: dict[str, int], launched: dict[str, int], deadline: float
    ) -> None:
        pending = dict(waiting)
        while pending:
            for name, pid in list(pending.items()):
                if not alive(pid):
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
            time.sleep(POLL_INTERVAL)

    def _answers(self, name: str) -> bool:
        host = self.settings.stack.host
        if name == "slapd":
            return accepts(host, self.settings.stack.ldap_port) and self._ldap_bind_ok()
        if name == "samba":
            return accepts(self.settings.stack.samba_host, 636) and self._samba_bind_ok()
        if name == "postgres":
            return self.postgres.answers()
        return banner(host, self.settings.stack.imap_port, b"* OK") and banner(
            host, self.settings.stack.lmtp_port, b"220", quit_command=b"QUIT\r\n"
        )

    def _check_port_free(self, name: str, label: str, port: int) -> None:
        host = self._host(name)
        if not port_in_use(host, port):
            return
        owner = listener_owner(port)
        by = f" by {owner}" if owner else " by another program"
        if name == "samba":
            raise StackError(
                f"cannot start samba: {label} port {host}:{port} is already in use{by}; "
                "Samba's ports cannot be moved: give it another loopback address with "
                "stack.samba_host (MAILSVC_STACK__SAMBA_HOST), or stop that program"
            )
        setting = {
            "ldap": "ldap_port",
            "imap": "imap_port",
            "imaps": "imaps_port",
            "lmtp": "lmtp_port",
            "postgresql": "pg_port",
        }[label]
        raise StackError(
            f"cannot start {name}: {label} port {host}:{port} is already in use{by}; "
            f"stop that program or choose another port with stack.{setting} "
            f"(MAILSVC_STACK__{setting.upper()})"
        )

    # -- stopping ------------------------------------------------------------------------

    def _stop(self, names: Sequence[str], started: Mapping[str, int] | None = None) -> list[str]:
        # What this process just started goes by its pid: a server still starting may not be
        # recognisable yet (Samba opens the database it is known by after a moment).
        targets = dict(started or {})
        for name in names:
            if name not in targets and (pid := self._running_pid(name)) is not None:
                targets[name] = pid
        # PostgreSQL's SIGTERM waits for every client to leave; SIGINT disconnects them.
        terminate(targets, signals={"postgres": signal.SIGINT})
        for name in names:
            self.paths.pid_file(name).unlink(missing_ok=True)
        if "dovecot" in names and self.paths.base_dir_is_external:
            remove_private_dir(self.paths.dovecot_base)
        return [name for name in names if name in targets]

    # -- process identity ----------------------------------------------------------------

    def _argv(self, name: str) -> list[str]:
        stack = self.settings.stack
        if name == "samba":
            return samba.argv(self.settings, self.paths)
        if name == "postgres":
            return self.postgres.argv()
        if name == "slapd":
            exe = shutil.which(stack.slapd) or stack.slapd
            # "-d none" keeps slapd in the foreground and prints only messages that are always
            # logged (start-up, fatal errors) to stderr; "-d 0" would hide even a failed bind().
            url = f"ldap://{url_host(stack.host)}:{stack.ldap_port}/"
            return [exe, "-f", str(self.paths.slapd_conf), "-h", url, "-d", "none"]
        exe = shutil.which(stack.dovecot) or stack.dovecot
        return [exe, "-F", "-c", str(self.paths.dovecot_conf)]

    def _running_pid(self, name: str) -> int | None:
        """The pid of this var_dir's server ``name`` if it runs (recognised by its command
        line: our executable with our configuration file; Samba by its open database)."""
        if name == "samba":
            return find_running(
                self.paths.pid_file(name), samba.recogniser(self.settings, self.paths)
            )
        if name == "postgres":
            return self.postgres.running_pid(self.paths.pid_file(name))
        config = self.paths.slapd_conf if name == "slapd" else self.paths.dovecot_conf
        executable = Path(self._argv(name)[0]).name
        return running_pid(self.paths.pid_file(name), executable, config)

    # -- slapd ---------------------------------------------------------------------------

    def _configure_slapd(self, initial: Path | None = None) -> None:
        paths = self.paths
        directory = self.settings.directory
        # The stack is synchronous code run before any event loop (CLI, tests, benchmarks), so
        # hashing here blocks nothing else.
        rootpw = hash_new_password_blocking(self.settings, self._admin_password())
        # configs.slapd_conf is looked up at call time: bench/provision.py wraps it.
        write_atomic(paths.slapd_conf, configs.slapd_conf(self.settings, paths, rootpw), 0o600)
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
        result = run([self.settings.stack.slaptest, "-u", "-f", str(paths.slapd_conf)])
        if result.returncode != 0:
            raise StackError(
                f"slapd configuration {paths.slapd_conf} is invalid (slaptest):\n"
                f"{result.stdout.strip()}\ncheck the [directory] settings"
            )
        if created_for is not None:
            return
        if initial is None:
            reader_hash = hash_new_password_blocking(
                self.settings, secret_store.reader_password(self.settings)
            )
            write_atomic(paths.base_ldif, ldif.base_ldif(directory, reader_hash), 0o600)
        source = initial or paths.base_ldif
        result = run(
            [self.settings.stack.slapadd, "-q", "-f", str(paths.slapd_conf), "-l", str(source)],
            timeout=_BULK_TIMEOUT,
        )
        if result.returncode != 0:
            what = "the saved entries" if initial else "the directory's base entries"
            raise StackError(
                f"could not create {what} with slapadd:\n"
                f"{result.stdout.strip()}\ncheck directory.base_dn, councillors_rdn and reader_dn"
            )
        write_atomic(paths.ldap_initialized, f"{directory.base_dn}\n", 0o600)
        paths.base_ldif.unlink(missing_ok=True)  # its reader hash goes stale with the password

    def _ldap_bind_ok(self) -> bool:
        directory = self.settings.directory
        code = ldap_bind(self._local_ldap_url(), directory.admin_dn, self._admin_password())
        if code is None or code in _LDAP_NOT_YET:
            return False
        if code == 0:
            return True
        raise StackError(
            f"slapd at {self._local_ldap_url()} refuses the admin bind as {directory.admin_dn} "
            f"(LDAP result {code}): it runs with an older configuration; "
            "stop it with `mailsvc stack down` and start the stack again"
        )

    def _samba_bind_ok(self) -> bool:
        code = samba.admin_bind(self.settings)
        if code is None or code in _LDAP_NOT_YET:
            return False
        if code == 0:
            return True
        ad = self.settings.samba_directory
        raise StackError(
            f"samba at {ad.url} refuses the bind as {ad.admin_principal} (LDAP result {code}): "
            f"its domain in {self.paths.samba_dir} was provisioned with another Administrator "
            "password (directory.admin_password or var_dir/secrets/samba-admin); set that one "
            f"back, or stop the stack and remove {self.paths.samba_dir} to provision anew"
        )

    def _sync_reader_password(self) -> None:
        """Make the reader entry's password match the settings (they may change after init)."""
        import ldap3  # slow import, needed only here

        directory = self.settings.directory
        password = secret_store.reader_password(self.settings)
        if ldap_bind(self._local_ldap_url(), directory.reader_dn, password) == 0:
            return
        conn = ldap_connection(self._local_ldap_url(), directory.admin_dn, self._admin_password())
        try:
            ok = conn.bind() and conn.modify(
                directory.reader_dn,
                {
                    "userPassword": [
                        (
                            ldap3.MODIFY_REPLACE,
                            [hash_new_password_blocking(self.settings, password)],
                        )
                    ]
                },
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
        return f"ldap://{url_host(stack.host)}:{stack.ldap_port}"

    def _admin_password(self) -> str:
        return secret_store.admin_password(self.settings)

    # -- Dovecot -------------------------------------------------------------------------

    def _configure_dovecot(self) -> None:
        paths = self.paths
        identity = configs.DovecotIdentity.current()
        private_dir(paths.dovecot_base)
        paths.dovecot_state.mkdir(mode=0o750, exist_ok=True)
        paths.mail_root.mkdir(mode=0o700, exist_ok=True)
        if identity.as_root:
            os.chown(paths.mail_root, identity.mail_uid, identity.mail_gid)
            make_traversable(paths.var_dir, identity.mail_uid, identity.mail_gid)
        # The auth process runs as Dovecot's internal user and reads these files. The master
        # secret is generated with full entropy, so a fast hash is enough (scheme=SSHA below).
        secret_hash = ssha_hash(mailstore.master_secret(self.settings))
        write_atomic(
            paths.master_users,
            configs.master_users(secret_hash),
            0o640,
            group=identity.internal_gid,
        )
        reader_password = secret_store.reader_password(self.settings)
        write_atomic(
            paths.dovecot_ldap_conf,
            configs.dovecot_ldap_conf(self.settings, paths, identity, reader_password),
            0o640,
            group=identity.internal_gid,
        )
        if self.settings.stack.imaps_port:
            certs.ensure_certificate(
                paths.dovecot_tls_cert, paths.dovecot_tls_key, self.settings.stack.host
            )
        write_atomic(
            paths.dovecot_mailsvc_conf,
            configs.dovecot_mailsvc_conf(self.settings, paths, identity),
            0o644,
        )
        write_atomic(
            paths.dovecot_conf,
            configs.dovecot_conf(paths, identity, paths.dovecot_mailsvc_conf),
            0o644,
        )

    # -- helpers -------------------------------------------------------------------------

    def _check_loopback(self) -> None:
        # The embedded servers take plaintext logins without TLS and a master user: never on a
        # network. A real deployment points directory.url and delivery.lmtp_host elsewhere.
        host = self.settings.stack.host
        if not is_loopback(host):
            raise StackError(
                f"stack.host = {host!r}: the local stack listens only on this machine "
                "(127.0.0.1 or ::1): its slapd and Dovecot accept passwords without TLS"
            )

    def _host(self, name: str) -> str:
        stack = self.settings.stack
        return stack.samba_host if name == "samba" else stack.host

    def _ports(self, name: str) -> list[tuple[str, int]]:
        stack = self.settings.stack
        if name == "samba":
            return list(samba.SHOWN_PORTS)
        if name == "slapd":
            return [("ldap", stack.ldap_port)]
        if name == "postgres":
            return [("postgresql", stack.pg_port)]
        imaps = [("imaps", stack.imaps_port)] if stack.imaps_port else []
        return [("imap", stack.imap_port), *imaps, ("lmtp", stack.lmtp_port)]

    def _port_info(self, name: str) -> str:
        host = url_host(self._host(name))
        return ", ".join(f"{label} {host}:{port}" for label, port in self._ports(name))

    def _log_hint(self, name: str) -> str:
        log = self.paths.log(name)
        last = tail(log, _LOG_TAIL_LINES)
        return f"last lines of {log}:\n{last}" if last else f"{log} is empty"

    def _prepare_dirs(self) -> None:
        paths = self.paths
        bad = configs.UNSAFE_PATH.search(str(paths.var_dir))
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
        if name not in ALL_SERVICES:
            raise StackError(f"unknown service {name!r}: expected one of {', '.join(ALL_SERVICES)}")
