"""Where the files that ship beside the code are: the templates and the default configuration.

Their source is the repository's top-level ``templates/`` and ``config/``. A checkout (tests, an
editable install, ``make run``) reads them there, so an edit shows at once. A built wheel carries
copies as package data under ``mailsvc/_data/`` (``setup.py`` puts them there at build time),
found through :mod:`importlib.resources` once the package is installed anywhere else.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

# The top-level directories of the repository that ship as package data, by name.
SHIPPED = ("templates", "config")
DATA_PACKAGE_DIR = "_data"


def source_root() -> Path | None:
    """The checkout this package was imported from, or None when it runs installed.

    A checkout is recognised by what only it has beside ``mailsvc/``: ``pyproject.toml``,
    ``templates/`` and the default ``config/mailsvc.toml``.
    """
    root = Path(__file__).resolve().parent.parent
    looks_like_checkout = (
        (root / "pyproject.toml").is_file()
        and (root / "templates").is_dir()
        and (root / "config" / "mailsvc.toml").is_file()
    )
    return root if looks_like_checkout else None


@functools.cache
def _shipped_dir(name: str) -> Path:
    root = source_root()
    if root is not None:
        return root / name
    data = resources.files("mailsvc").joinpath(DATA_PACKAGE_DIR, name)
    # Jinja's loader and the stack's config writer need real paths. pip always unpacks a wheel
    # onto the file system, where files() is a plain Path; a zip import would not be one.
    if not isinstance(data, Path):
        raise RuntimeError(f"mailsvc's {name}/ is inside {data}: install mailsvc unpacked")
    if not data.is_dir():
        raise RuntimeError(
            f"mailsvc's {name}/ is missing: expected {data}; the package was built without"
            " its data (build it with the repository's setup.py: pip install . or pip wheel .)"
        )
    return data


def templates_dir() -> Path:
    """The Jinja templates: mail, letters, web pages and their static files, stack configs."""
    return _shipped_dir("templates")


def config_dir() -> Path:
    """The embedded default ``mailsvc.toml`` and the sample roster."""
    return _shipped_dir("config")
