"""The error hierarchy shared by the service. Messages say what to do."""

from __future__ import annotations


class MailsvcError(Exception):
    """Base of every error mailsvc raises on purpose."""


class ConfigError(MailsvcError):
    """A setting is missing or wrong; the message is one line naming the key and the value."""


class TemporaryFailure(MailsvcError):
    """Something we depend on is down or busy; the same request may succeed later (SMTP 4xx)."""


class PermanentFailure(MailsvcError):
    """The request can never succeed as it is (SMTP 5xx)."""


class StorageUnavailable(TemporaryFailure):
    """The database could not store or read data."""
