"""requirements.lock agrees with pyproject.toml, and every file it lets pip install is hashed.

`make run` and `make test` install only from the lock (`pip install --require-hashes`), so a
dependency added to pyproject.toml, or a floor raised past an advisory, does nothing until the lock
follows: `make lock` regenerates it. These tests fail until it has.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# The lock is made for this interpreter and platform (Makefile, target `lock`).
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def parse_lock(text: str) -> dict[str, tuple[Version, int]]:
    """Name -> (pinned version, number of hashes); a malformed entry raises ValueError."""
    entries: dict[str, tuple[Version, int]] = {}
    logical = re.sub(r"\\\n", " ", text)  # join the backslash continuations
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split(" --")
        pin = PIN.fullmatch(requirement.split(";", 1)[0].strip())
        if pin is None:
            raise ValueError(f"not an exact pin: {line[:80]!r}")
        hashes = HASH.findall(line)
        if len(hashes) != len(options):
            raise ValueError(f"{pin[1]}: an option other than a sha256 --hash: {line[:120]!r}")
        entries[canonicalize_name(pin[1])] = (Version(pin[2]), len(hashes))
    return entries


def declared(pyproject: dict[str, Any]) -> list[Requirement]:
    """What the lock must satisfy: runtime, the dev extra, and the build backend."""
    project = pyproject["project"]
    texts = [
        *project["dependencies"],
        *project["optional-dependencies"]["dev"],
        *pyproject["build-system"]["requires"],
    ]
    return [Requirement(text) for text in texts]


def disagreements(pyproject: dict[str, Any], lock_text: str) -> list[str]:
    locked = parse_lock(lock_text)
    problems = [f"{name}=={pin} has no --hash" for name, (pin, n) in locked.items() if n == 0]
    for requirement in declared(pyproject):
        if requirement.marker is not None and not requirement.marker.evaluate(TARGET):
            continue
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{requirement} is not in the lock")
            continue
        version = locked[name][0]
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement} but the lock pins {name}=={version}")
    return problems


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_lock_satisfies_pyproject_and_hashes_every_entry() -> None:
    problems = disagreements(_pyproject(), (ROOT / "requirements.lock").read_text())
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_the_lock_carries_pip_for_the_makefile() -> None:
    # The venv's own pip upgrades itself from the lock, hash-checked like the rest.
    assert "pip" in parse_lock((ROOT / "requirements.lock").read_text())


# The checker itself, on small made-up inputs: it must see each kind of disagreement.

H = "--hash=sha256:" + "ab" * 32
PYPROJECT: dict[str, Any] = {
    "project": {
        "dependencies": ["starlette>=1.3.1", "uvloop>=0.19; sys_platform == 'win32'"],
        "optional-dependencies": {"dev": ["pytest>=8"]},
    },
    "build-system": {"requires": ["setuptools>=78.1.1"]},
}


def test_an_agreeing_lock_passes() -> None:
    lock = (
        f"starlette==1.10.0 \\\n    {H} \\\n    {H}\n    # via x\n"
        f"pytest==9.2.0 {H}\nsetuptools==84.2.1 {H}\n"
    )
    assert disagreements(PYPROJECT, lock) == []


def test_a_missing_dependency_a_low_pin_and_a_missing_hash_are_reported() -> None:
    lock = f"starlette==1.3.0 {H}\npytest==9.2.0\n"
    assert disagreements(PYPROJECT, lock) == [
        "pytest==9.2.0 has no --hash",
        "starlette>=1.3.1 but the lock pins starlette==1.3.0",
        "setuptools>=78.1.1 is not in the lock",
    ]


def test_names_are_compared_canonically() -> None:
    project = {**PYPROJECT["project"], "dependencies": ["Flufl.Bounce>=6"]}
    pyproject = {**PYPROJECT, "project": project}
    lock = f"flufl-bounce==6.0.0 {H}\npytest==9.2.0 {H}\nsetuptools==84.2.1 {H}\n"
    assert disagreements(pyproject, lock) == []


@pytest.mark.parametrize(
    "lock", ["-e .\n", f"starlette>=1.3 {H}\n", f"starlette==1.10.0 --index-url=x {H}\n"]
)
def test_entries_that_are_not_hashed_exact_pins_are_refused(lock: str) -> None:
    with pytest.raises(ValueError):
        parse_lock(lock)
