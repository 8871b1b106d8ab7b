"""The directory adapter: the code that speaks LDAP (with ``ldapwire`` for bulk additions).

ldap3 is blocking, so every operation runs in a worker thread on a pooled connection and the
public API is ``async``. Every filter value and DN component is escaped here. "Not found" (``None``)
is kept strictly apart from "directory unreachable" (:class:`DirectoryUnavailable`).

``adapter`` is :class:`Directory` (reads, writes, groups, passwords); ``entries`` its
configuration, entries and escaping; ``pool`` the ldap3 connections; ``bulk`` additions through
``ldapwire``.
"""

from provisioning.directory.adapter import Directory
from provisioning.directory.entries import (
    CouncillorEntry,
    DirectoryConfig,
    GroupEntry,
    councillor_dn,
    person_filter,
)
from provisioning.errors import DirectoryError, DirectoryUnavailable

__all__ = [
    "CouncillorEntry",
    "Directory",
    "DirectoryConfig",
    "DirectoryError",
    "DirectoryUnavailable",
    "GroupEntry",
    "councillor_dn",
    "person_filter",
]
