"""The stack's PostgreSQL cluster (stack.database = "postgresql"), run from var_dir/postgres.

Layout::

    var_dir/postgres/data/          the cluster (initdb once; owned by the user it runs as)
    var_dir/postgres/run/           its Unix socket (none when that path is too long)
    var_dir/postgres/initialized    written once initdb and the first configuration succeeded
    var_dir/log/postgres.log        the server's output
    var_dir/secrets/postgres-admin, postgres-mailsvc   the passwords of the roles postgres
                                    (superuser) and mailsvc (owns the database mailsvc)

PostgreSQL refuses to run as root: started by root, initdb and postgres run as the system user
``postgres`` (Debian's package creates it) through setpriv, which execs in place, so the pid we
spawn is the postmaster's. The cluster's directory is given to that user, and var_dir gets the
search bit for others (o+x, as Dovecot's mail user needs too) when it lacks it, e.g. a 0700
directory from mkdtemp; its parents must already let that user through.

postgresql.conf and pg_hba.conf come from templates/stack/ and are rewritten on every start:
TCP only on stack.host:stack.pg_port, every login with a SCRAM-SHA-256 password, loopback only.
``durable=False`` (the tests' own clusters) turns fsync, synchronous commits and full page
writes off: fast, and a crash of the machine may lose the cluster.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import urllib.parse
from pathlib import Path

from mailsvc import secret_store
from mailsvc.config import Settings
from mailsvc.config.settings import STACK_PG_DATABASE, STACK_PG_ROLE, STACK_PG_SECRET
from mailsvc.stack import configs
from mailsvc.stack.errors import StackError
from mailsvc.stack.layout import Paths, make_traversable, write_atomic
from mailsvc.stack.supervise import accepts, run, running_pid, url_host

ADMIN_ROLE = "postgres"
ADMIN_SECRET = "postgres-admin"  # noqa: S105 - the secret's file name
# Debian's system user for PostgreSQL: the cluster's owner when the stack is started by root.
SYSTEM_USER = "postgres"
SETPRIV = "/usr/bin/setpriv"
PACKAGE_DIR = Path("/usr/lib/postgresql")
INSTALL_COMMAND = "apt-get update && apt-get install -y postgresql"
TOOLS = ("initdb", "postgres", "pg_isready", "psql", "pg_dump", "pg_restore")
_SUN_PATH_MAX = 107
_SOCKET_NAME = ".s.PGSQL.65535.lock"
_INITDB_TIMEOUT = 300.0


def bin_dir(settings: Settings) -> Path:
    """stack.postgres_bin, or the newest /usr/lib/postgresql/<version>/bin with a postgres."""
    if settings.stack.postgres_bin:
        return Path(settings.stack.postgres_bin)
    found = []
    for candidate in PACKAGE_DIR.glob("*/bin"):
        version = candidate.parent.name
        if (candidate / "postgres").exists() and re.fullmatch(r"\d+(\.\d+)?", version):
            found.append((tuple(int(p) for p in version.split(".")), candidate))
    if not found:
        raise StackError(
            f"stack.database = 'postgresql' needs PostgreSQL's programs, and there is no "
            f"{PACKAGE_DIR}/<version>/bin on this machine; install them with: {INSTALL_COMMAND} "
            "(or set stack.postgres_bin to the directory that holds initdb and postgres)"
        )
    return max(found)[1]


def tool(settings: Settings, name: str) -> str:
    """One of PostgreSQL's programs (pg_dump, pg_restore...) from the stack's bin directory,
    falling back to the one on PATH when no server package is installed (a client-only host)."""
    try:
        path = bin_dir(settings) / name
    except StackError:
        return shutil.which(name) or name
    return str(path) if path.exists() else (shutil.which(name) or name)


def admin_password(settings: Settings) -> str:
    return secret_store.load_or_create_secret(settings, ADMIN_SECRET)


def mailsvc_password(settings: Settings) -> str:
    return secret_store.load_or_create_secret(settings, STACK_PG_SECRET)


def pg_quote(value: str | os.PathLike[str], setting: str = "a generated value") -> configs.Escaped:
    """A single-quoted string in postgresql.conf: quotes doubled, backslashes escaped; no line
    breaks (the file is read line by line)."""
    text = os.fspath(value)
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise StackError(
            f"{setting}: postgresql.conf cannot hold line breaks or control characters"
        )
    return configs.Escaped("'" + text.replace("\\", "\\\\").replace("'", "''") + "'")


def sql_literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on: only quotes are special)."""
    if "\x00" in value:
        raise StackError("a PostgreSQL string cannot hold NUL characters")
    return "'" + value.replace("'", "''") + "'"


class PostgresCluster:
    """The private cluster of one var_dir: create, configure, start (by LocalStack), check."""

    def __init__(self, settings: Settings, paths: Paths, *, durable: bool = True) -> None:
        self.settings = settings
        self.durable = durable
        self.dir = paths.var_dir / "postgres"
        self.data = self.dir / "data"
        self.initialized = self.dir / "initialized"
        self.var_dir = paths.var_dir
        socket_dir = self.dir / "run"
        # No Unix socket rather than a name the kernel cannot hold: clients come over TCP.
        too_long = len(os.fsencode(socket_dir / _SOCKET_NAME)) > _SUN_PATH_MAX
        self.socket_dir: Path | None = None if too_long else socket_dir

    # -- identity ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.settings.stack.host

    @property
    def port(self) -> int:
        return self.settings.stack.pg_port

    def program(self, name: str) -> Path:
        return bin_dir(self.settings) / name

    def missing_binaries(self) -> list[str]:
        try:
            directory = bin_dir(self.settings)
        except StackError:
            return [f"{PACKAGE_DIR}/<version>/bin/postgres"]
        missing = [str(directory / name) for name in TOOLS if not (directory / name).exists()]
        if os.geteuid() == 0 and not Path(SETPRIV).exists():
            missing.append(SETPRIV)
        return missing

    def argv(self) -> list[str]:
        """The command that runs the postmaster in the foreground (as ``postgres`` under root)."""
        return [*self._as_owner(), str(self.program("postgres")), "-D", str(self.data)]

    def running_pid(self, pid_file: Path) -> int | None:
        if not self.data.is_dir():  # never made here: nothing to look for among the processes
            pid_file.unlink(missing_ok=True)
            return None
        return running_pid(pid_file, "postgres", self.data)

    def url(self, database: str = STACK_PG_DATABASE) -> str:
        """libpq URL of the superuser (password included: for tools, never printed)."""
        password = urllib.parse.quote(admin_password(self.settings), safe="")
        return f"postgresql://{ADMIN_ROLE}:{password}@{url_host(self.host)}:{self.port}/{database}"

    # -- preparing -----------------------------------------------------------------------

    def prepare(self) -> None:
        """initdb once, then (on every start) the configuration files; everything owned by the
        user the server runs as."""
        owner = self._owner()
        self.dir.mkdir(mode=0o700, exist_ok=True)
        if owner is not None:
            who = f"PostgreSQL runs as the user {SYSTEM_USER!r} (it refuses root), who"
            make_traversable(self.var_dir, owner.pw_uid, owner.pw_gid, who)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        if not self.initialized.exists():
            self._initdb(owner)
        if self.socket_dir is not None:
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            if owner is not None:
                os.chown(self.socket_dir, owner.pw_uid, owner.pw_gid)
        for name, text in (
            ("postgresql.conf", self._postgresql_conf()),
            ("pg_hba.conf", configs.render_template("pg_hba.conf.j2")),
        ):
            path = self.data / name
            write_atomic(path, text, 0o600)
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def _initdb(self, owner: pwd.struct_passwd | None) -> None:
        shutil.rmtree(self.data, ignore_errors=True)  # a half-made cluster of an earlier try
        pwfile = self.dir / "initdb-password"
        write_atomic(pwfile, admin_password(self.settings) + "\n", 0o600)
        if owner is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        argv = [
            *self._as_owner(),
            str(self.program("initdb")),
            f"--pgdata={self.data}",
            f"--username={ADMIN_ROLE}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self.durable:
            argv.append("--no-sync")
        try:
            result = run(argv, timeout=_INITDB_TIMEOUT)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(
                f"initdb could not create the PostgreSQL cluster in {self.data}:\n"
                f"{result.stdout.strip()[-2000:]}"
            )
        write_atomic(self.initialized, f"{self.program('postgres')}\n", 0o600)

    def _postgresql_conf(self) -> str:
        return configs.render_template(
            "postgresql.conf.j2",
            host=pg_quote(self.host, "stack.host"),
            port=self.port,
            socket_dir=pg_quote(str(self.socket_dir or ""), "var_dir"),
            durable=self.durable,
        )

    # -- running -------------------------------------------------------------------------

    def answers(self) -> bool:
        """Accepting connections (not starting up or recovering), by pg_isready."""
        if not accepts(self.host, self.port):
            return False
        argv = [str(self.program("pg_isready")), "-q", "-t", "2"]
        argv += ["-h", self.host, "-p", str(self.port), "-d", "postgres", "-U", ADMIN_ROLE]
        return run(argv, timeout=10).returncode == 0

    def ensure_database(self) -> None:
        """The role mailsvc with the secret store's password, owning the database mailsvc
        (created when missing; the password set again on every start, as it may change)."""
        role, database = STACK_PG_ROLE, STACK_PG_DATABASE  # constants: plain SQL names
        password = sql_literal(mailsvc_password(self.settings))
        script = (
            f"SELECT 'CREATE ROLE {role} LOGIN' WHERE NOT EXISTS "  # noqa: S608 - constants
            f"(SELECT FROM pg_roles WHERE rolname = '{role}') \\gexec\n"
            f"ALTER ROLE {role} LOGIN PASSWORD {password};\n"
            f"SELECT 'CREATE DATABASE {database} OWNER {role}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{database}') \\gexec\n"
        )
        self.psql(script, database="postgres")

    def psql(self, script: str, database: str = "postgres") -> str:
        """Run ``script`` as the superuser (over TCP, password from the secret store)."""
        argv = [str(self.program("psql")), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", self.host, "-p", str(self.port), "-U", ADMIN_ROLE, "-d", database]
        argv += ["-f", "-"]
        env = {**os.environ, "PGPASSWORD": admin_password(self.settings), "PGCONNECT_TIMEOUT": "5"}
        result = run(argv, input_text=script, env=env)
        if result.returncode != 0:
            # psql quotes a failed statement, which may set a password: never show it.
            output = result.stdout.replace(mailsvc_password(self.settings), "***")
            secret = secret_store.secret_path(self.settings, ADMIN_SECRET)
            raise StackError(
                f"PostgreSQL at {url_host(self.host)}:{self.port} refused the setup as "
                f"{ADMIN_ROLE}:\n{output.strip()[-2000:]}\nif the cluster in {self.data} "
                f"was made with another password than {secret}'s, put that one back, or stop "
                f"the stack and remove {self.dir} to start an empty cluster"
            )
        return result.stdout

    # -- helpers -------------------------------------------------------------------------

    def _owner(self) -> pwd.struct_passwd | None:
        """The user the cluster runs as when we are root (None: as ourselves)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise StackError(
                f"PostgreSQL refuses to run as root, and there is no system user "
                f"{SYSTEM_USER!r} to run it as; install the package ({INSTALL_COMMAND}), which "
                "creates it, or start the stack as an ordinary user"
            ) from None

    def _as_owner(self) -> list[str]:
        if self._owner() is None:
            return []
        user = SYSTEM_USER
        return [SETPRIV, f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
