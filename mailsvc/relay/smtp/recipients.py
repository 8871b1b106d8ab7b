"""A short-lived cache in front of the directory for RCPT checks.

The directory given is the reader's (mailsvc.app.open_reader_directory), and a lookup asks for
the address and status only: nothing else, and never a password hash, reaches this process.
Only answers are cached (found, not found, group members); an unreachable directory is never
cached, so a 451 is not repeated once the directory is back.
"""

from __future__ import annotations

import time
from typing import Any

from provisioning.directory import CouncillorEntry


class CachedRecipients:
    def __init__(self, directory: Any, ttl: float, max_entries: int = 10000) -> None:
        self.directory = directory
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}

    def _get(self, key: tuple[str, str]) -> tuple[bool, Any]:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def _put(self, key: tuple[str, str], value: Any) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    async def find_by_address(self, address: str) -> CouncillorEntry | None:
        found, value = self._get(("a", address))
        if found:
            return value  # type: ignore[no-any-return]
        entry: CouncillorEntry | None = await self.directory.find_recipient(address)
        self._put(("a", address), entry)
        return entry

    async def expand_group(self, name: str) -> list[CouncillorEntry] | None:
        found, value = self._get(("g", name))
        if found:
            return value  # type: ignore[no-any-return]
        members: list[CouncillorEntry] | None = await self.directory.expand_group(name)
        self._put(("g", name), members)
        return members

    def clear(self) -> None:
        self._entries.clear()
