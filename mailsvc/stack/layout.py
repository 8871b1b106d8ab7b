"""Where the local stack keeps its files under var_dir, and the careful ways it writes them.

Layout::

    var_dir/ldap/slapd.conf, data/, initialized    directory configuration and database
    var_dir/samba/smb.conf, provisioned, tls/, private/, state/...  Samba AD DC (instead of ldap/)
    var_dir/dovecot/dovecot.conf, mailsvc.conf, dovecot-ldap.conf.ext, master-users, state/,
        run/, tls/
    var_dir/mail/<domain>/<local part>/            Maildirs
    var_dir/log/slapd.log, samba.log, samba-provision.log, dovecot.log
    var_dir/run/slapd.pid, samba.pid, dovecot.pid, stack.lock

Only Dovecot's socket directory moves to a short path in /tmp when var_dir is too deep for Unix
socket names.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from mailsvc.stack.errors import StackError

# sun_path holds 108 bytes including the NUL; Dovecot's longest socket name below base_dir is
# about 30 bytes ("login/imap-urlauth-worker" and friends), so keep a margin.
_SUN_PATH_MAX = 107
_SOCKET_NAME_RESERVE = 40


@dataclass(frozen=True)
class Paths:
    var_dir: Path
    ldap_dir: Path
    slapd_conf: Path
    base_ldif: Path
    ldap_data: Path
    ldap_initialized: Path
    samba_dir: Path
    smb_conf: Path
    samba_provisioned: Path
    samba_tls_cert: Path
    samba_tls_key: Path
    dovecot_dir: Path
    dovecot_conf: Path
    dovecot_mailsvc_conf: Path
    dovecot_ldap_conf: Path
    master_users: Path
    dovecot_tls_cert: Path  # with stack.imaps_port: self-signed, also the CA file to trust
    dovecot_tls_key: Path
    dovecot_state: Path
    dovecot_base: Path
    mail_root: Path
    log_dir: Path
    run_dir: Path
    lock: Path

    @classmethod
    def of(cls, var_dir: Path) -> Paths:
        ldap_dir = var_dir / "ldap"
        samba_dir = var_dir / "samba"
        dovecot_dir = var_dir / "dovecot"
        run_dir = var_dir / "run"
        base = dovecot_dir / "run"
        if len(os.fsencode(base)) + _SOCKET_NAME_RESERVE > _SUN_PATH_MAX:
            base = Path(f"/tmp/mailsvc-{var_dir_digest(var_dir)}")  # noqa: S108 - see private_dir
        return cls(
            var_dir=var_dir,
            ldap_dir=ldap_dir,
            slapd_conf=ldap_dir / "slapd.conf",
            base_ldif=ldap_dir / "base.ldif",
            ldap_data=ldap_dir / "data",
            ldap_initialized=ldap_dir / "initialized",
            samba_dir=samba_dir,
            smb_conf=samba_dir / "smb.conf",
            samba_provisioned=samba_dir / "provisioned",
            samba_tls_cert=samba_dir / "tls" / "cert.pem",
            samba_tls_key=samba_dir / "tls" / "key.pem",
            dovecot_dir=dovecot_dir,
            dovecot_conf=dovecot_dir / "dovecot.conf",
            dovecot_mailsvc_conf=dovecot_dir / "mailsvc.conf",
            dovecot_ldap_conf=dovecot_dir / "dovecot-ldap.conf.ext",
            master_users=dovecot_dir / "master-users",
            dovecot_tls_cert=dovecot_dir / "tls" / "cert.pem",
            dovecot_tls_key=dovecot_dir / "tls" / "key.pem",
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


def var_dir_digest(var_dir: Path) -> str:
    """A short name for one var_dir (its Dovecot instance, its socket directory in /tmp)."""
    return hashlib.sha256(os.fsencode(var_dir)).hexdigest()[:8]


def write_atomic(path: Path, text: str, mode: int, group: int | None = None) -> None:
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


def append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)


def tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def private_dir(path: Path) -> None:
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


def remove_private_dir(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            shutil.rmtree(path, ignore_errors=True)


def make_traversable(
    var_dir: Path, uid: int, gid: int, who: str = "Dovecot delivers mail as the user 'mail', who"
) -> None:
    """Let the mail user (or PostgreSQL's, ``who`` says) reach below var_dir: var_dir may be
    0700 (mkdtemp) and gets o+x; its parents must already allow."""
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
            f"{who} cannot enter {parent}; "
            f"allow it (chmod o+x {parent}) or choose a var_dir elsewhere"
        )
