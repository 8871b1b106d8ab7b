"""What reading a roster yields: the entries, the row problems, or a whole-file error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from provisioning.errors import ProvisioningError

ROLES = ("radny", "przewodniczacy", "wiceprzewodniczacy")


class RosterFileError(ProvisioningError):
    """The roster as a whole cannot be read; the message names the file and line if known."""

    def __init__(self, path: str, message: str, *, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One councillor as the roster wants them; ``line`` is where the row starts. Slots, not
    a ``__dict__``: a county's roster has tens of thousands (a fifth of the memory each)."""

    line: int
    given_names: str
    surname: str
    district: str
    club: str
    role: str
    committees: tuple[str, ...]
    term_start: date
    mandate_end: date | None
    private_email: str | None
    phone: str | None
    external_id: str | None

    @property
    def full_name(self) -> str:
        return f"{self.given_names} {self.surname}"


@dataclass(frozen=True)
class RosterProblem:
    """A problem in one row (line 1 is the header); ``column`` is the header as written."""

    path: str
    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        if self.column is None:
            return f"{self.path}:{self.line}: {self.message}"
        return f"{self.path}:{self.line}: column {self.column!r}: {self.message}"


@dataclass(frozen=True)
class Roster:
    """A parsed roster: the valid rows as entries, the invalid ones as problems."""

    path: str
    encoding: str
    delimiter: str
    entries: tuple[RosterEntry, ...]
    problems: tuple[RosterProblem, ...]
