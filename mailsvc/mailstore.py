"""The mailbox store's credentials: the Dovecot master user the service uses to read mailboxes.

Dovecot accepts ``<mailbox><MASTER_SEPARATOR><MASTER_USER>`` with the master secret as a login to
any existing mailbox. The service logs in that way, read-only, to see whether councillors opened
distribution messages. The secret is created once under var_dir; the local stack writes its hash
into Dovecot's master users file, and a production Dovecot is given the same one.
"""

from __future__ import annotations

from mailsvc import secret_store
from mailsvc.config import Settings

MASTER_USER = "master"
# Dovecot's auth_master_user_separator: "<mailbox>*master" logs in to <mailbox> as the master.
MASTER_SEPARATOR = "*"
MASTER_SECRET_NAME = "dovecot-master"  # noqa: S105 - the name of a secret file


def master_secret(settings: Settings) -> str:
    """The master user's password (created on first use)."""
    return secret_store.load_or_create_secret(settings, MASTER_SECRET_NAME)


def master_credentials(settings: Settings, mailbox: str) -> tuple[str, str]:
    """IMAP login name and password that open ``mailbox`` as Dovecot's master user."""
    return f"{mailbox}{MASTER_SEPARATOR}{MASTER_USER}", master_secret(settings)
