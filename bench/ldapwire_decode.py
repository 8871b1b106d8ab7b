"""Decoding of a councillor listing by provisioning.ldapwire: this tree against a git revision.

.venv/bin/python bench/ldapwire_decode.py [--entries 50000] [--baseline main] [--long-form 4]

Builds the bytes slapd sends for ``list_brief`` (SearchResultEntry messages with a DN, ``mail``
and a status attribute of 1-4 values, some names with Polish diacritics; a SearchResultDone
with the paged results control every 2,000 entries), feeds them to ``ResponseReader`` in reads
of 64 KiB as the client does, and prints the best of ``--rounds`` for the baseline's decoder
(``git show REV:provisioning/ldapwire/ber.py``) and this tree's, on the same bytes, in turns.
Single-threaded, no servers: CPU time of the decoder only. ``--long-form 4`` writes every
constructed element's length in four octets (as Active Directory does).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provisioning.ldapwire import ber as current  # noqa: E402
from provisioning.ldapwire.protocol import PAGED_RESULTS  # noqa: E402

READ_SIZE = 1 << 16
PAGE = 2000
GIVEN = ["jan", "anna", "łukasz", "małgorzata", "piotr", "zofia", "grzegorz", "ewa"]
SURNAMES = ["kowalski", "nowak", "żółć", "wiśniewska", "dąbrowski", "lewandowska", "zieliński"]
STATUS = ["aktywny", "zawieszony", "kadencja 2024-2029", "komisja budżetowa", "klub niezależnych"]
CLASSES = ["top", "person", "organizationalPerson", "inetOrgPerson"]


def tlv(tag: int, content: bytes, long_form: int = 0) -> bytes:
    n = len(content)
    if long_form:
        return bytes((tag, 0x80 | long_form)) + n.to_bytes(long_form, "big") + content
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


def octets(value: str | bytes) -> bytes:
    return tlv(0x04, value.encode() if isinstance(value, str) else value)


def entry_message(message_id: int, i: int, long_form: int) -> bytes:
    given, surname = GIVEN[i % len(GIVEN)], SURNAMES[(i // 3) % len(SURNAMES)]
    uid = f"{given}.{surname}{i}"
    if i % 2:
        status = ("description", [STATUS[(i + k) % len(STATUS)] for k in range(1 + i % 4)])
    else:
        status = ("objectClass", CLASSES[: 1 + i % 4])
    attributes = [("mail", [f"{uid}@rada.example"]), status]
    body = b"".join(
        tlv(0x30, octets(name) + tlv(0x31, b"".join(map(octets, values)), long_form), long_form)
        for name, values in attributes
    )
    entry = tlv(0x64, octets(f"uid={uid},ou=radni,dc=rada,dc=example") + tlv(0x30, body, long_form))
    return tlv(0x30, integer(message_id) + entry, long_form)


def done_message(message_id: int, cookie: bytes, long_form: int) -> bytes:
    result = tlv(0x65, b"\x0a\x01\x00" + octets(b"") + octets(b""), long_form)
    paged = tlv(0x30, integer(0) + octets(cookie), long_form)
    control = tlv(0x30, octets(PAGED_RESULTS) + octets(paged), long_form)
    return tlv(0x30, integer(message_id) + result + tlv(0xA0, control, long_form), long_form)


def listing(count: int, long_form: int = 0) -> bytes:
    """The answers to a paged search of ``count`` entries, one page of PAGE per messageID
    (the bind is message 1)."""
    parts = []
    for i in range(count):
        message_id = 2 + i // PAGE
        parts.append(entry_message(message_id, i, long_form))
        if (i + 1) % PAGE == 0 or i + 1 == count:
            cookie = b"" if i + 1 == count else (i + 1).to_bytes(4, "big") + b"\x00" * 4
            parts.append(done_message(message_id, cookie, long_form))
    return b"".join(parts)


def load_baseline(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:provisioning/ldapwire/ber.py"],
        check=True,
        capture_output=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="ber-baseline-")) / "ber_baseline.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("ber_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode_all(module: ModuleType, data: bytes) -> list[Any]:
    reader = module.ResponseReader()
    out: list[Any] = []
    for i in range(0, len(data), READ_SIZE):
        out += reader.feed(data[i : i + READ_SIZE])
    assert reader.pending_bytes == 0
    return out


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of one run (CPU time moves less with the machine's other load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--long-form", type=int, default=0, choices=(0, 1, 2, 3, 4))
    args = parser.parse_args()
    data = listing(args.entries, args.long_form)
    baseline = load_baseline(args.baseline)
    expected = decode_all(baseline, data)
    assert decode_all(current, data) == expected, "this tree decodes differently"
    entries = sum(1 for r in expected if r.entry is not None)
    print(f"{entries:,} entries, {len(expected) - entries} pages, {len(data):,} bytes")
    old: list[tuple[float, float]] = []
    new: list[tuple[float, float]] = []
    for _ in range(args.rounds):  # in turns, so that both see the same load on the machine
        old.append(timed(lambda: decode_all(baseline, data)))
        new.append(timed(lambda: decode_all(current, data)))
    for i, what in enumerate(("wall", "CPU")):
        a, b = min(t[i] for t in old), min(t[i] for t in new)
        print(
            f"best of {args.rounds}, {what:4}: baseline {args.baseline} {a:.3f} s, "
            f"this tree {b:.3f} s, ×{a / b:.2f}"
        )


if __name__ == "__main__":
    main()
