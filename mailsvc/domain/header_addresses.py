"""The addresses of header fields a client wrote (From, Sender), read without letting a hostile
field stall or crash the reader.

The email package's ``getaddresses`` recurses once per nested comment ``(`` and per group
``:``, and hits Python's recursion limit (RecursionError) at about 500 of them; it also works
character by character in Python, about 3 seconds per megabyte, on the event loop of the SMTP
door. ``header_addresses`` refuses such a field instead, and callers decide what an unreadable
field means for them (an address check must then fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import getaddresses

# Far above any real field: a From names one address, a Sender one, a group a few dozen.
MAX_FIELD_CHARS = 8 * 1024
# Each level of recursion needs one of these characters; 100 keep it far below the limit.
MAX_NESTING_CHARS = 100


def header_addresses(values: Sequence[str]) -> list[tuple[str, str]] | None:
    """``getaddresses(values)``: (display name, address) pairs; None when the fields are too
    long or too deeply nested to be read safely (no real field is)."""
    if sum(len(value) for value in values) > MAX_FIELD_CHARS:
        return None
    if sum(value.count("(") + value.count(":") for value in values) > MAX_NESTING_CHARS:
        return None
    return getaddresses(list(values))
