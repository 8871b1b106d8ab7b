"""Fixed inputs for the local stack's generated configuration files (golden-file tests).

Everything that would come from the machine (user ids, password hashes, secrets) is pinned, so
the same scenario always renders the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings
from mailsvc.stack.configs import DovecotIdentity

GOLDEN_DIR = Path(__file__).parent / "golden"
ROOTPW_HASH = "{SSHA}cm9vdHB3LWhhc2gtZm9yLXRlc3Rz"
READER_HASH = "{SSHA}cmVhZGVyLWhhc2gtZm9yLXRlc3Rz"


NOT_ROOT = DovecotIdentity(False, 1001, 1002, "clerk", "council", 1002)
ROOT = DovecotIdentity(True, 8, 8, "dovecot", "dovecot", 106)


def default_settings() -> Settings:
    """The embedded default on a fixed var_dir, with a pinned reader password."""
    return load_settings(DEFAULT_CONFIG, env={}).with_changes(
        var_dir=Path("/srv/mailsvc"),
        directory={"reader_password": "Reader-Pass-1"},
    )


def custom_settings() -> Settings:
    """IPv6, IMAPS, a var_dir too deep for Dovecot's sockets, and directory values that need
    escaping in every file: a non-ASCII base, DN escapes, quotes, backslashes and filter
    metacharacters."""
    base = "o=Rada Miasta Przykładowo"
    return load_settings(DEFAULT_CONFIG, env={}).with_changes(
        var_dir=Path("/var/lib/mailsvc-" + "x" * 80),
        stack={
            "host": "::1",
            "ldap_port": 3390,
            "imap_port": 1144,
            "imaps_port": 1994,
            "lmtp_port": 2425,
        },
        directory={
            "base_dn": base,
            "admin_dn": f"cn=admin,{base}",
            "reader_dn": f'cn=mail\\"store #1,ou=system,{base}',
            "reader_password": "pa\"ss\\word #1 'x' %u",
            "councillors_rdn": "ou=Radni\\, kadencja 2024,ou=ludzie",
            "disabled_value": "dis(abled)*\\%",
        },
    )


SCENARIOS = {
    "default": (default_settings, NOT_ROOT),
    "custom-root": (custom_settings, ROOT),
}
FILES = (
    "slapd.conf",
    "base.ldif",
    "dovecot.conf",
    "mailsvc.conf",
    "dovecot-ldap.conf.ext",
    "smb.conf",
)
