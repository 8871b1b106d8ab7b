"""What every part of the local stack reports failures with."""

from __future__ import annotations

from mailsvc.errors import MailsvcError

INSTALL_COMMAND = (
    "apt-get update && apt-get install -y slapd ldap-utils dovecot-imapd dovecot-lmtpd dovecot-ldap"
)
# Added for stack.directory = "samba": the AD DC, without file and print sharing's extras.
SAMBA_INSTALL_COMMAND = (
    "apt-get install -y --no-install-recommends "
    "samba samba-dsdb-modules samba-vfs-modules samba-ad-provision"
)


class StackError(MailsvcError):
    """The local stack could not be started, checked or stopped; the message says what to do."""
