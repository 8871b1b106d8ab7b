"""Reading a roster off the event loop: on a thread, or a large one in a process of its own.

Checking a roster is pure Python work, about 70 µs a row. For a council's few dozen rows a
thread is plenty; a county's or a vendor's roster of tens of thousands takes seconds that an
import would otherwise spend with its second core idle, while it also lists the directory and
reads the register (Python work too, so a thread would only take turns with it under the GIL).
So a file of ``APART_BYTES`` or more is read by ``python -m provisioning.roster.apart`` and the
result comes back over a pipe as JSON arrays, which decode several times faster than the
dataclasses would unpickle, a batch of rows a line (neither side holds the whole answer).

The child is this program's own interpreter running this module; the request (path, encoding,
committees, size limit) goes in on stdin, never on the command line. Whole-file problems come
back as RosterFileError exactly as ``read_roster`` raises them. If the child cannot run at all
(no interpreter, killed), the roster is read on a thread instead: slower, same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

from provisioning.roster.file import DEFAULT_MAX_BYTES, read_roster
from provisioning.roster.result import Roster, RosterEntry, RosterFileError, RosterProblem
from provisioning.roster.rows import new_entry

log = logging.getLogger(__name__)

# About 1,800 rows: below it a process costs more than it saves.
APART_BYTES = 256 * 1024


async def read_roster_apart(
    path: Path | str,
    *,
    encoding: str | None = None,
    committees: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    apart_bytes: int = APART_BYTES,
) -> Roster:
    """``read_roster`` without blocking the event loop; a file of ``apart_bytes`` or more is
    read in a child process (see the module's docstring)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0  # read_roster names the problem
    if size < apart_bytes:
        return await asyncio.to_thread(
            read_roster, path, encoding=encoding, committees=committees, max_bytes=max_bytes
        )
    request = [str(path), encoding, dict(committees) if committees is not None else None, max_bytes]
    try:
        return await _run_child(json.dumps(request).encode())
    except _ChildFailed as exc:
        log.warning("reading the roster in a process failed (%s); reading it here", exc)
        return await asyncio.to_thread(
            read_roster, path, encoding=encoding, committees=committees, max_bytes=max_bytes
        )


class _ChildFailed(Exception):
    """The child process did not answer (not a problem of the roster)."""


async def _run_child(request: bytes) -> Roster:
    # The answer goes to an unlinked temporary file (0600), not a pipe: the child writes it at
    # once and ends, instead of holding its memory until a busy parent has read it all.
    with tempfile.TemporaryFile(prefix="mailsvc-roster-") as answer:
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                stdin=asyncio.subprocess.PIPE,
                stdout=answer,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise _ChildFailed(f"cannot start {sys.executable}: {exc}") from exc
        try:
            _, err = await child.communicate(request)
        except BaseException:  # cancelled: the child's work is not wanted any more
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            raise
        if child.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
            raise _ChildFailed(f"exit status {child.returncode}: {tail[0]}")
        answer.seek(0)
        return await _Receiver().read(answer)


# --- the wire form: one JSON array a line ------------------------------------------------------
#
# ["ok", path, encoding, delimiter], then ["rows", [row, ...]] for each _BATCH rows, then
# ["end", problems]; or only ["file-error", path, message, line]. Neither process holds the
# whole answer at once: the child writes a batch at a time, and the parent makes a batch's
# entries before it decodes the next one.

_OK, _ROWS, _END, _FILE_ERROR = "ok", "rows", "end", "file-error"
_BATCH = 2000


def _wire_rows(entries: Sequence[RosterEntry]) -> list[tuple[Any, ...]]:
    # Committees as one string (slugs have no commas) and dates as day numbers: the parent
    # makes each distinct value once (_Memo) instead of once per row.
    return [
        (
            e.line,
            e.given_names,
            e.surname,
            e.district,
            e.club,
            e.role,
            ",".join(e.committees),
            e.term_start.toordinal(),
            e.mandate_end.toordinal() if e.mandate_end is not None else None,
            e.private_email,
            e.phone,
            e.external_id,
        )
        for e in entries
    ]


def _answer_lines(roster: Roster) -> Iterator[Any]:
    yield (_OK, roster.path, roster.encoding, roster.delimiter)
    for start in range(0, len(roster.entries), _BATCH):
        yield (_ROWS, _wire_rows(roster.entries[start : start + _BATCH]))
    yield (_END, [(p.path, p.line, p.column, p.message) for p in roster.problems])


class _Memo(dict[Any, Any]):
    """``memo[key]``: ``make(key)``, made once per distinct key."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: Any) -> Any:
        value = self[key] = self._make(key)
        return value


class _Receiver:
    """The parent's side: the answer's lines back into a Roster (or a RosterFileError)."""

    def __init__(self) -> None:
        self.days = _Memo(lambda n: date.fromordinal(n) if n is not None else None)
        self.committee_lists = _Memo(lambda text: tuple(text.split(",")) if text else ())
        self.entries: list[RosterEntry] = []

    async def read(self, answer: BinaryIO) -> Roster:
        head = self._line(answer)
        if head[0] == _FILE_ERROR:
            _, path, message, line = head
            raise RosterFileError(path, message, line=line)
        if head[0] != _OK:
            raise _ChildFailed(f"unexpected answer {head[0]!r}")
        _, path, encoding, delimiter = head
        while True:
            line = self._line(answer)
            if line[0] == _ROWS:
                self._add(line[1])
                await asyncio.sleep(0)  # a batch at a time: the listing beside goes on
            elif line[0] == _END:
                problems = tuple(RosterProblem(*p) for p in line[1])
                break
            else:
                raise _ChildFailed(f"unexpected answer {line[0]!r}")
        return Roster(
            path=path,
            encoding=encoding,
            delimiter=delimiter,
            entries=tuple(self.entries),
            problems=problems,
        )

    def _line(self, answer: BinaryIO) -> Any:
        line = answer.readline()  # a local file the child has finished: no waiting
        if not line.endswith(b"\n"):
            raise _ChildFailed("the answer ended early")
        try:
            return json.loads(line)
        except Exception as exc:  # any garbage means the child misbehaved
            raise _ChildFailed(f"unreadable answer: {exc}") from exc

    def _add(self, rows: list[list[Any]]) -> None:
        days, committee_lists = self.days, self.committee_lists
        self.entries += [
            new_entry(  # the rows were checked by read_roster in the child
                line=line,
                given_names=given_names,
                surname=surname,
                district=district,
                club=club,
                role=role,
                committees=committee_lists[committees],
                term_start=days[term_start],
                mandate_end=days[mandate_end],
                private_email=private_email,
                phone=phone,
                external_id=external_id,
            )
            for (
                line,
                given_names,
                surname,
                district,
                club,
                role,
                committees,
                term_start,
                mandate_end,
                private_email,
                phone,
                external_id,
            ) in rows
        ]


def _serve() -> None:
    """The child: one request on stdin, the answer's lines on stdout."""
    # A one-shot process that makes tens of thousands of entries and no cycles: the cyclic
    # collector would only walk them again and again (a fifth of the read).
    gc.disable()
    path, encoding, committees, max_bytes = json.loads(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    try:
        roster = read_roster(path, encoding=encoding, committees=committees, max_bytes=max_bytes)
    except RosterFileError as exc:
        lines: Iterator[Any] = iter([(_FILE_ERROR, exc.path, exc.reason, exc.line)])
    else:
        lines = _answer_lines(roster)
    for line in lines:
        out.write(json.dumps(line, ensure_ascii=False).encode())
        out.write(b"\n")
    out.flush()


if __name__ == "__main__":
    _serve()
