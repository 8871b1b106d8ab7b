"""`make lint` runs import-linter over the contracts in pyproject.toml. These tests run it on a
copy of the tree with one forbidden import added, and on the tree as it is, so a contract that
cannot fail (or a tree that breaks one) shows here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(target: Path) -> Path:
    for name in ("mailsvc", "provisioning"):
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy's packages come first on the path, ahead of the installed (editable) ones.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _add_import(tree: Path, module: str, statement: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    text = path.read_text(encoding="utf-8")
    marker = "from __future__ import annotations\n"
    assert marker in text, path
    path.write_text(text.replace(marker, f"{marker}\n{statement}\n", 1), encoding="utf-8")


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "broken"),
    [
        # A cycle hidden behind TYPE_CHECKING still counts.
        (
            "mailsvc.storage.tables",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mailsvc.storage.queue",
            "No import cycles anywhere",
        ),
        ("provisioning.naming", "import mailsvc.config", "provisioning (the directory library)"),
        ("mailsvc.web.site", "import mailsvc.cli.councillors", "The web and the scheduled jobs"),
        ("mailsvc.jobs", "import mailsvc.app", "The web and the scheduled jobs"),
        ("mailsvc.domain.notice", "import sqlalchemy", "The domain is pure"),
        ("mailsvc.domain.relay", "import mailsvc.storage.queue", "The domain is pure"),
        ("mailsvc.storage.sessions", "import mailsvc.distribution.service", "Layers"),
    ],
)
def test_a_forbidden_import_breaks_the_lint(
    tmp_path: Path, module: str, statement: str, broken: str
) -> None:
    tree = _copy_tree(tmp_path)
    _add_import(tree, module, statement)
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    broken_section = result.stdout.split("Broken contracts", 1)[-1]
    assert broken in broken_section, result.stdout
