"""Starts and stops the local slapd and Dovecot that the embedded default and the tests use.

local.py holds LocalStack; configs.py renders the configuration files from templates/stack/,
ldif.py makes the directory's first entries, supervise.py handles processes and ports, and
layout.py says where everything lives under var_dir; system.py renders the same files for a
server's own slapd and Dovecot (`mailsvc init`). The master user's credentials belong to
the mailbox store (mailsvc.mailstore) and are re-exported here for the tests that use both.
"""

from mailsvc.mailstore import MASTER_SECRET_NAME, MASTER_USER, master_credentials
from mailsvc.stack.errors import INSTALL_COMMAND, StackError
from mailsvc.stack.local import SERVICES, LocalStack, ServiceStatus
from mailsvc.stack.supervise import free_ports

__all__ = [
    "INSTALL_COMMAND",
    "MASTER_SECRET_NAME",
    "MASTER_USER",
    "SERVICES",
    "LocalStack",
    "ServiceStatus",
    "StackError",
    "free_ports",
    "master_credentials",
]
