"""Errors of the directory library (kept apart from mailsvc: provisioning never imports it)."""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base of every error the provisioning library raises on purpose."""


class DirectoryUnavailable(ProvisioningError):
    """The directory cannot be reached or did not answer in time. Not the same as 'not found'."""


class DirectoryError(ProvisioningError):
    """The directory refused an operation (permissions, schema, constraint)."""


class NamingError(ProvisioningError):
    """No address can be derived from the given name."""
