"""Typed, frozen settings from a TOML file plus MAILSVC_* environment overrides.

The embedded default is ``config/mailsvc.toml``. ``--config FILE`` or ``MAILSVC_CONFIG`` selects
another file. ``MAILSVC_<SECTION>__<KEY>`` overrides a key inside a section and ``MAILSVC_<KEY>``
a top-level key; any other ``MAILSVC_*`` variable (but ``MAILSVC_CONFIG`` and
``MAILSVC_EVENT_LOOP``) is an error. Every problem is reported as one :class:`ConfigError` line
naming the key, the value and what was expected.

``settings`` holds the dataclasses, ``load`` reads the file and the environment, ``check``
validates what was read.
"""

from mailsvc.config.check import is_loopback, reminder_offsets, validate
from mailsvc.config.load import DEFAULT_CONFIG, ENV_PREFIX, load_settings
from mailsvc.config.settings import (
    ClientsSettings,
    ClusterSettings,
    CouncilSettings,
    DatabaseSettings,
    DeliverySettings,
    DirectorySettings,
    DistributionSettings,
    DkimSelector,
    DkimSettings,
    DnsSettings,
    EvidenceSettings,
    LoggingSettings,
    MetricsSettings,
    MtaStsSettings,
    ProvisioningSettings,
    RelaySettings,
    SambaDirectory,
    Settings,
    SmarthostSettings,
    SmtpSettings,
    StackSettings,
    SubmissionSettings,
    WebSettings,
)

__all__ = [
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "ClientsSettings",
    "ClusterSettings",
    "CouncilSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "DirectorySettings",
    "DistributionSettings",
    "DkimSelector",
    "DkimSettings",
    "DnsSettings",
    "EvidenceSettings",
    "LoggingSettings",
    "MetricsSettings",
    "MtaStsSettings",
    "ProvisioningSettings",
    "RelaySettings",
    "SambaDirectory",
    "Settings",
    "SmarthostSettings",
    "SmtpSettings",
    "StackSettings",
    "SubmissionSettings",
    "WebSettings",
    "is_loopback",
    "load_settings",
    "reminder_offsets",
    "validate",
]
