"""What every part of the local stack reports failures with."""

from __future__ import annotations

from mailsvc.errors import MailsvcError

INSTALL_COMMAND = (
    "apt-get update && apt-get install -y slapd ldap-utils dovecot-imapd dovecot-lmtpd dovecot-ldap"
)


class StackError(MailsvcError):
    """The local stack could not be started, checked or stopped; the message says what to do."""
