"""Starts and stops the local slapd and Dovecot that the embedded default and the tests use."""

from mailsvc.stack.local import (
    INSTALL_COMMAND,
    MASTER_SECRET_NAME,
    MASTER_USER,
    SERVICES,
    LocalStack,
    ServiceStatus,
    StackError,
    free_ports,
    master_credentials,
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
