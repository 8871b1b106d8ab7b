"""The system's slapd and Dovecot for a production installation: the files `mailsvc init` writes
into DIR/system/ for the operator to install, in Debian 12's places by default.

They come from the local stack's templates (templates/stack/), so the system's servers get what
the local stack's have: the schema, the argon2 module, the access rules of the reader entry and
the admin, the base entries, Dovecot's LDAP passdb and userdb, the master user, LMTP and the
auth penalties. What differs is where things live (SystemLayout) and that IMAP requires TLS.
The ports, addresses, DNs and the certificate come from the installation's settings, the same
values the service itself uses, so a file cannot disagree with mailsvc.toml.

Layout of DIR/system/ (dovecot/ mirrors /etc/dovecot)::

    slapd/slapd.conf                          for `slaptest -f ... -F /etc/ldap/slapd.d`
    slapd/base.ldif                           for `slapadd`: base, OUs, the reader entry
    dovecot/conf.d/99-mailsvc.conf            Dovecot's settings for mailsvc
    dovecot/dovecot-ldap-mailsvc.conf.ext     LDAP passdb and userdb (the reader's password)
    dovecot/mailsvc-master-users              the master user (hashed secret)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailsvc import mailstore, secret_store
from mailsvc.config import Settings
from mailsvc.passwords import hash_new_password_blocking
from mailsvc.stack import configs, ldif
from mailsvc.stack.errors import StackError
from mailsvc.stack.layout import write_atomic
from provisioning.passwords import ssha_hash

SYSTEM_DIR = "system"
SLAPD_CONF = Path("slapd/slapd.conf")
BASE_LDIF = Path("slapd/base.ldif")
DOVECOT_CONF = Path("dovecot/conf.d/99-mailsvc.conf")
DOVECOT_LDAP_CONF = Path("dovecot/dovecot-ldap-mailsvc.conf.ext")
MASTER_USERS = Path("dovecot/mailsvc-master-users")


@dataclass(frozen=True)
class SystemLayout:
    """Where the system's servers keep what mailsvc needs, and whom Dovecot keeps mail as.
    The defaults are Debian 12's; tests point them into a temporary directory."""

    ldap_data: Path = Path("/var/lib/ldap")
    slapd_run_dir: Path = Path("/var/run/slapd")
    # Where the files of dovecot/ are installed (Dovecot reads the others from there).
    dovecot_dir: Path = Path("/etc/dovecot")
    mail_root: Path = Path("/var/vmail")
    # The mailboxes' owner: user and group (`useradd --system vmail` makes both).
    mail_owner: tuple[str, str] = ("vmail", "vmail")
    # None keeps Dovecot's defaults: every address for IMAPS, and uids from 500 (a user made
    # with `useradd --system` gets one between 500 and 999 on Debian).
    listen: str | None = None
    first_valid: tuple[int, int] | None = None


def render(settings: Settings, layout: SystemLayout | None = None) -> dict[Path, tuple[str, int]]:
    """The files of DIR/system/ by relative path, each with its mode; hashes are salted anew."""
    layout = layout or SystemLayout()
    d = settings.directory
    cert, key = settings.smtp.tls_cert, settings.smtp.tls_key
    if not cert or not key or cert == "auto":
        raise StackError(
            "smtp.tls_cert and smtp.tls_key must name the certificate's files (certbot's): "
            "the system's Dovecot serves IMAP with the same certificate"
        )
    lmtp_host, lmtp_port = settings.lmtp_address
    # Argon2, as the directory's other passwords (init is synchronous: nothing else waits).
    rootpw = hash_new_password_blocking(settings, secret_store.admin_password(settings))
    reader_password = secret_store.reader_password(settings)
    dovecot = configs.MailsvcDovecot(
        listen=layout.listen,
        imap_port=0,  # no plain IMAP: councillors use IMAPS (clients.imap_port)
        imaps_port=settings.clients.imap_port or 993,
        lmtp_host=lmtp_host,
        lmtp_port=lmtp_port,
        mail_root=layout.mail_root,
        master_users=layout.dovecot_dir / MASTER_USERS.name,
        ldap_conf=layout.dovecot_dir / DOVECOT_LDAP_CONF.name,
        tls=(cert, key),
        mail_owner=layout.mail_owner,
        first_valid=layout.first_valid,
    )
    # The master secret has full entropy, so a fast salted hash is enough (scheme=SSHA).
    master_hash = ssha_hash(mailstore.master_secret(settings))
    return {
        SLAPD_CONF: (
            configs.render_slapd_conf(d, rootpw, layout.ldap_data, layout.slapd_run_dir),
            0o600,
        ),
        BASE_LDIF: (
            ldif.base_ldif(d, hash_new_password_blocking(settings, reader_password)),
            0o600,
        ),
        DOVECOT_CONF: (configs.render_dovecot_mailsvc(dovecot), 0o644),
        DOVECOT_LDAP_CONF: (
            configs.render_dovecot_ldap_conf(
                settings,
                reader_password,
                mail_owner=layout.mail_owner,
                mail_root=layout.mail_root,
            ),
            0o600,
        ),
        MASTER_USERS: (configs.master_users(master_hash), 0o600),
    }


def write(settings: Settings, target: Path, layout: SystemLayout | None = None) -> list[Path]:
    """Write the files of ``render`` under ``target`` (made 0700: they hold password hashes and
    the reader's password); return their paths."""
    files = render(settings, layout)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.chmod(0o700)
    written = []
    for relative, (text, mode) in files.items():
        path = target / relative
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(path, text, mode)
        written.append(path)
    return written
