"""Reading a roster in a process of its own (provisioning.roster.apart): the same roster, the
same errors as read_roster, and nothing left behind when it is cancelled or cannot run."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioning.roster import Roster, RosterFileError, apart, read_roster
from provisioning.roster.apart import read_roster_apart

SAMPLE_ROSTER = Path(__file__).resolve().parents[2] / "config" / "sample-roster.csv"
COMMITTEES = {
    "budzetowa": "Komisja Budżetowa",
    "rewizyjna": "Komisja Rewizyjna",
    "oswiaty": "Komisja Oświaty",
}
HEADER = "imię;nazwisko;okręg;klub;funkcja;komisje;początek kadencji;koniec mandatu;e-mail;tel;id"


def large_roster(path: Path, rows: int) -> Path:
    """A roster of ``rows`` rows, some of them wrong in different ways."""
    lines = [HEADER]
    for n in range(rows):
        end = "30.04.2029" if n % 7 == 0 else ""
        phone = "600 000 1" + f"{n % 100:02d}" if n % 3 else ""
        committees = '"budzetowa\nrewizyjna"' if n % 11 == 0 else "oswiaty"
        line = (
            f"Łukasz{n};Żółć-{n};{n % 23 + 1};Klub {n % 5};radny;{committees};"
            f"07.05.2024;{end};osoba{n}@example.org;{phone};ID-{n}"
        )
        if n % 97 == 1:
            line = line.replace("07.05.2024", "31.02.2024")  # a date that does not exist
        if n % 89 == 2:
            line = line.replace("oswiaty", "nieznana")  # an unknown committee
        lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    return path


async def read_with_fake_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, shell: str
) -> tuple[Roster, Path, str]:
    """A roster of 300 rows read apart by an "interpreter" that is the ``shell`` script; the
    roster, its path, and what was logged."""
    path = large_roster(tmp_path / "radni.csv", 300)
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n{shell}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with caplog.at_level(logging.WARNING, logger=apart.__name__):
        roster = await read_roster_apart(path, committees=COMMITTEES, apart_bytes=0)
    return roster, path, caplog.text


@pytest.mark.parametrize("rows", [3, 2_000])
async def test_a_roster_read_apart_equals_the_one_read_here(tmp_path: Path, rows: int) -> None:
    path = large_roster(tmp_path / "radni.csv", rows)
    here = read_roster(path, committees=COMMITTEES)
    assert here.problems and here.entries  # the file has both
    away = await read_roster_apart(path, committees=COMMITTEES, apart_bytes=0)
    assert away == here
    # Equal and usable alike: hashable, with tuples where the reader makes tuples.
    assert set(away.entries) == set(here.entries)
    assert all(isinstance(e.committees, tuple) for e in away.entries)


async def test_the_sample_roster_read_apart_equals_the_one_read_here() -> None:
    here = read_roster(SAMPLE_ROSTER, committees=COMMITTEES)
    assert await read_roster_apart(SAMPLE_ROSTER, committees=COMMITTEES, apart_bytes=0) == here


async def test_a_small_file_is_read_on_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_child(*args: Any) -> Any:
        raise AssertionError("a small roster started a process")

    monkeypatch.setattr(apart, "_run_child", no_child)
    path = large_roster(tmp_path / "radni.csv", 20)
    roster = await read_roster_apart(path, committees=COMMITTEES)
    assert roster == read_roster(path, committees=COMMITTEES)


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        ("imię,nazwisko\n".encode() + b"\x00\x01\x02" * 4000, None),  # binary
        (HEADER.encode("utf-8") + b"\n" + b"Jan;Kowalski;1;\xff\xfe\n" * 5000, "utf-8"),
        (b"imie;nazwisko;okreg\n" + b'"Jan;Kowalski;1\n' * 3000, None),  # an unclosed quote
    ],
)
async def test_whole_file_problems_are_the_same_error(
    tmp_path: Path, content: bytes, encoding: str | None
) -> None:
    path = tmp_path / "radni.csv"
    path.write_bytes(content)
    with pytest.raises(RosterFileError) as here:
        read_roster(path, encoding=encoding, committees=COMMITTEES)
    with pytest.raises(RosterFileError) as away:
        await read_roster_apart(path, encoding=encoding, committees=COMMITTEES, apart_bytes=0)
    assert str(away.value) == str(here.value)
    assert (away.value.path, away.value.line) == (here.value.path, here.value.line)


async def test_too_large_a_file_is_refused_apart_as_here(tmp_path: Path) -> None:
    path = large_roster(tmp_path / "radni.csv", 200)
    with pytest.raises(RosterFileError, match="over the limit of 1000 bytes"):
        await read_roster_apart(path, max_bytes=1000, apart_bytes=0)


async def test_without_a_working_interpreter_the_roster_is_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = large_roster(tmp_path / "radni.csv", 300)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with caplog.at_level(logging.WARNING, logger=apart.__name__):
        roster = await read_roster_apart(path, committees=COMMITTEES, apart_bytes=0)
    assert roster == read_roster(path, committees=COMMITTEES)
    assert "reading it here" in caplog.text


async def test_a_child_that_dies_is_read_here_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An interpreter that fails before it answers: "python -c 'exit(3)' -m …" runs the -c.
    roster, path, log = await read_with_fake_python(
        tmp_path, monkeypatch, caplog, f"exec {sys.executable} -c 'raise SystemExit(3)'"
    )
    assert roster == read_roster(path, committees=COMMITTEES)
    assert "exit status 3" in log


async def test_cancelling_the_read_ends_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    children: list[asyncio.subprocess.Process] = []
    started = asyncio.Event()
    start = asyncio.create_subprocess_exec

    async def recorded(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        # A child that never answers: the read can only end by being cancelled.
        child = await start(sys.executable, "-c", "import time; time.sleep(60)", **kwargs)
        children.append(child)
        started.set()
        return child

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recorded)
    path = large_roster(tmp_path / "radni.csv", 50)
    reading = asyncio.create_task(read_roster_apart(path, apart_bytes=0))
    await started.wait()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert children[0].returncode is not None  # killed and reaped, not left running


def test_the_child_answers_a_batch_of_rows_a_line(tmp_path: Path) -> None:
    # Neither side holds the whole answer: the child writes (and the parent decodes) one batch
    # of rows at a time, each line far smaller than the whole.
    import json
    import subprocess

    path = large_roster(tmp_path / "radni.csv", 5_000)
    request = json.dumps([str(path), None, COMMITTEES, 10**8]).encode()
    out = subprocess.run(
        [sys.executable, "-m", apart.__name__], input=request, capture_output=True, check=True
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line[0] for line in lines] == ["ok", "rows", "rows", "rows", "end"]
    entries = read_roster(path, committees=COMMITTEES).entries
    assert [len(line[1]) for line in lines[1:-1]] == [2_000, 2_000, len(entries) - 4_000]
    assert max(map(len, out.splitlines())) < len(out) / 2


@pytest.mark.parametrize(
    "answer",
    [
        '["ok", "x", "utf-8", ";"]\n["rows", []]\n',  # ends before its last line
        '["ok", "x", "utf-8", ";"]\n{not json\n',
        '["ok", "x", "utf-8", ";"]\n["what", 1]\n',
        '["rows", []]\n',
    ],
)
async def test_a_child_whose_answer_is_cut_or_garbled_is_read_here_instead(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    script = tmp_path / "answer.txt"
    script.write_text(answer)
    roster, path, log = await read_with_fake_python(
        tmp_path, monkeypatch, caplog, f"cat > /dev/null\ncat {script}"
    )
    assert roster == read_roster(path, committees=COMMITTEES)
    assert "reading it here" in log
