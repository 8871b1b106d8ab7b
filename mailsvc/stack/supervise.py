"""Processes and ports of the local servers: start, recognise, probe and stop them via /proc.

Nothing here knows slapd from Dovecot; LocalStack says which program, configuration and ports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mailsvc.stack.errors import StackError
from mailsvc.stack.layout import append, write_atomic

POLL_INTERVAL = 0.005
STOP_TIMEOUT = 10.0
_PROBE_TIMEOUT = 1.0

# Servers this process spawned: only these are ever reaped here (other children belong to
# whoever started them). Servers started by another process are reaped by init.
_SPAWNED: set[int] = set()


# -- starting and stopping -----------------------------------------------------------------


def spawn(argv: list[str], log: Path) -> int:
    """Start ``argv`` in a session of its own, output appended to ``log``; return its pid."""
    append(log, f"--- mailsvc: starting {' '.join(argv)}\n")
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
    return pid


def terminate(
    targets: dict[str, int],
    timeout: float = STOP_TIMEOUT,
    signals: Mapping[str, signal.Signals] | None = None,
) -> None:
    """SIGTERM the servers (name -> pid; ``signals`` may name another signal for a server, such
    as PostgreSQL's fast shutdown, SIGINT) and wait until they and their children are gone;
    SIGKILL what is left after ``timeout``."""
    for name, pid in targets.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, (signals or {}).get(name, signal.SIGTERM))
    # Each server leads its own process group (its session): wait for all of it, so that
    # no Dovecot child still holds a port when this returns.
    if not _wait_groups_gone(list(targets.values()), timeout):
        for pid in targets.values():
            _kill_group(pid)
        if not _wait_groups_gone(list(targets.values()), timeout):
            raise StackError(
                f"{', '.join(targets)} did not stop even after SIGKILL "
                f"(process groups {', '.join(map(str, targets.values()))}); "
                "look at them with `ps -eo pid,pgid,stat,cmd`"
            )


def running_pid(pid_file: Path, executable: str, config: Path) -> int | None:
    """The pid of the server ``executable`` running with ``config``, if there is one.

    Pids get reused, so a pid counts only while /proc/PID/cmdline still shows that executable
    with that configuration file. A server whose pid file was lost (e.g. var_dir/run cleaned by
    hand) is found by its command line, and its pid file written again.
    """

    def ours(pid: int) -> bool:
        cmdline = _cmdline(pid)  # empty for zombies and vanished processes
        return bool(cmdline) and Path(cmdline[0]).name == executable and str(config) in cmdline

    return find_running(pid_file, ours)


def find_running(pid_file: Path, ours: Callable[[int], bool]) -> int | None:
    """The pid in ``pid_file`` if ``ours`` recognises it, else the first process it does
    (then written to ``pid_file``); None when none runs."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        pid = 0
    if pid > 0 and ours(pid) and alive(pid):
        return pid
    pid_file.unlink(missing_ok=True)
    for candidate in _all_pids():
        if ours(candidate) and alive(candidate):
            write_atomic(pid_file, f"{candidate}\n", 0o644)
            return candidate
    return None


def leader_holding(pid: int, executable: str, path: Path) -> bool:
    """Whether ``pid`` runs ``executable``, leads its process group (as what spawn() starts
    does) and has ``path`` open: how a server that rewrites its command line (Samba's
    "samba: root process") is recognised."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    fields = _proc_stat(pid)
    return (
        Path(exe).name == executable
        and fields is not None
        and fields[2] == str(pid)
        and str(path) in _open_files(pid)
    )


def run(
    argv: list[str],
    *,
    input_text: str | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short tool (slaptest, slapadd, samba-tool, psql); its stdout and stderr together in
    ``stdout``; ``input_text`` is its standard input (a password kept off the command line),
    ``env`` its whole environment (default: ours)."""
    try:
        return subprocess.run(
            argv,
            input=input_text,
            env=dict(env) if env is not None else None,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{' '.join(argv[:3])}... did not finish within {timeout:g} s") from exc


# -- processes -----------------------------------------------------------------------------


def alive(pid: int) -> bool:
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
    if alive(pgid):
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
        time.sleep(POLL_INTERVAL)
    return True


def _kill_group(pid: int) -> None:
    """SIGKILL the server and, if it leads its process group (it does when we started it),
    everything in that group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            leads = os.getpgid(pid) == pid
        except ProcessLookupError:
            # The leader is gone, but its group may live on (Dovecot's children): a group
            # keeps the id of the process that made it while any member is left.
            leads = True
        if leads:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


# -- network -------------------------------------------------------------------------------


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def banner(host: str, port: int, expected: bytes, quit_command: bytes = b"x LOGOUT\r\n") -> bool:
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


def port_in_use(host: str, port: int) -> bool:
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


def listens(pid: int, port: int) -> bool:
    sockets = _listening_sockets(port)
    return bool(sockets) and not sockets.isdisjoint(_open_files(pid))


def listener_owner(port: int) -> str | None:
    """'pid N (command line)' of the process listening on ``port``, when /proc tells."""
    sockets = _listening_sockets(port)
    if sockets:
        for pid in _all_pids():
            if not sockets.isdisjoint(_open_files(pid)):
                return f"pid {pid} ({' '.join(_cmdline(pid))})"
    return None


def ldap_connection(url: str, dn: str, password: str, ca_file: Path | None = None) -> Any:
    """An unbound ldap3 connection; with ``ca_file`` the server's certificate must verify
    against it (ldaps://)."""
    import ldap3  # slow import, needed only for the directory checks

    from mailsvc.stack.ldaptls import VerifiedTls

    tls = VerifiedTls(ca_file) if ca_file else None
    server = ldap3.Server(url, connect_timeout=_PROBE_TIMEOUT, get_info=ldap3.NONE, tls=tls)
    return ldap3.Connection(
        server,
        user=dn,
        password=password,
        receive_timeout=2,  # ldap3 packs it into SO_RCVTIMEO: must be an int
        raise_exceptions=False,
        auto_referrals=False,
    )


def ldap_bind(url: str, dn: str, password: str, ca_file: Path | None = None) -> int | None:
    """The LDAP result code of a simple bind (0 = success), or None if nobody answers."""
    from ldap3.core.exceptions import LDAPException

    conn = ldap_connection(url, dn, password, ca_file)
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
