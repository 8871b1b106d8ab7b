"""One build step beyond pyproject.toml: the top-level ``templates/`` and ``config/`` (their
source, which stays where it is) are copied into the built package as ``mailsvc/_data/``, where
``mailsvc.resources`` finds them once installed. An editable install reads the originals."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("templates", "config")  # as mailsvc.resources.SHIPPED


class BuildPyWithData(build_py):
    """``build_py`` that also copies the shipped directories into ``mailsvc/_data/``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for name in SHIPPED:
            source = HERE / name
            if not source.is_dir():
                raise SystemExit(f"setup.py: {source} is missing; build from a full checkout")
            target = Path(self.build_lib) / "mailsvc" / "_data" / name
            # Start empty: a template removed from the source must not linger from a last build.
            shutil.rmtree(target, ignore_errors=True)
            for path in sorted(source.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    out = target / path.relative_to(source)
                    self.mkpath(str(out.parent))
                    self.copy_file(str(path), str(out))


setup(cmdclass={"build_py": BuildPyWithData})
