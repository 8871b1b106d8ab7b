"""Roster files (CSV exported from Excel by clerks) → desired councillors, with line errors.

Pure except ``read_roster``, which reads the file. Clerks' files come as ``;``- or
``,``-delimited CSV in UTF-8 (with or without BOM) or Windows-1250, with Polish or English
headers. A problem in one row never hides the others: every row problem is collected with
its line and column, and only whole-file problems raise ``RosterFileError``.

``file`` reads and decodes the bytes, ``rows`` splits the text into rows and checks each one
with the columns and cell rules of ``fields``; ``result`` holds what comes out.
"""

from provisioning.roster.file import DEFAULT_MAX_BYTES, read_roster
from provisioning.roster.result import ROLES, Roster, RosterEntry, RosterFileError, RosterProblem
from provisioning.roster.rows import parse_roster_text

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ROLES",
    "Roster",
    "RosterEntry",
    "RosterFileError",
    "RosterProblem",
    "parse_roster_text",
    "read_roster",
]
