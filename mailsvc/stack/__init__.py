"""Starts and stops the local slapd and Dovecot that the embedded default and the tests use."""

from mailsvc.mailstore import MASTER_SECRET_NAME, MASTER_USER, master_credentials
from mailsvc.stack.local import (
    INSTALL_COMMAND,
    SERVICES,
    LocalStack,
    ServiceStatus,
    StackError,
    free_ports,
)

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
