"""What every part of the local stack reports failures with."""

from __future__ import annotations

from mailsvc.errors import MailsvcError

# Debian's packages of the directory and the mailbox store (the local stack's and a server's).
PACKAGES = "slapd ldap-utils dovecot-imapd dovecot-lmtpd dovecot-ldap"
INSTALL_COMMAND = f"apt-get update && apt-get install -y {PACKAGES}"
# Added for stack.directory = "samba": the AD DC, without file and print sharing's extras.
SAMBA_INSTALL_COMMAND = (
    "apt-get install -y --no-install-recommends "
    "samba samba-dsdb-modules samba-vfs-modules samba-ad-provision"
)


class StackError(MailsvcError):
    """The local stack could not be started, checked or stopped; the message says what to do."""
