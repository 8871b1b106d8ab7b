"""Jinja2 rendering of user-facing text: mail bodies, letters, later the web pages.

Templates live in the repository's ``templates/`` directory (a copy ships inside the installed
package: :func:`mailsvc.resources.templates_dir`), one file per language beside each other:
``mail/welcome.pl.txt.j2``, ``mail/welcome.en.txt.j2``. Callers name a template without its
language (``render("mail/welcome.txt", "en", ...)``); a language that has no file of its own gets
the Polish one, which always exists.

Only ``*.html.j2`` templates are autoescaped: plain-text mail must show ``&`` as ``&``.
"""

from __future__ import annotations

import functools
import re
from datetime import date
from pathlib import Path
from typing import Any

import jinja2

from mailsvc import resources
from mailsvc.domain import vocabulary, wording

TEMPLATES_DIR = resources.templates_dir()
DEFAULT_LANGUAGE = "pl"

_LANGUAGE = re.compile(r"[a-z]{2}")
# "mail/welcome.txt" -> ("mail/welcome", "txt"); the stem may not itself contain a dot.
_NAME = re.compile(r"(?P<stem>[A-Za-z0-9_/-]+)\.(?P<ext>[a-z0-9]+)")

# Genitive month names: Polish dates read "7 maja 2024", never "7 maj 2024".
_MONTHS_PL_GENITIVE = (
    "stycznia",
    "lutego",
    "marca",
    "kwietnia",
    "maja",
    "czerwca",
    "lipca",
    "sierpnia",
    "września",
    "października",
    "listopada",
    "grudnia",
)
_MONTHS_EN = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def format_date_pl(value: date) -> str:
    """``date(2024, 5, 7)`` -> ``"7 maja 2024"`` (a datetime is formatted by its date)."""
    return f"{value.day} {_MONTHS_PL_GENITIVE[value.month - 1]} {value.year}"


def format_date_en(value: date) -> str:
    """``date(2024, 5, 7)`` -> ``"7 May 2024"``."""
    return f"{value.day} {_MONTHS_EN[value.month - 1]} {value.year}"


def format_date(value: date, language: str) -> str:
    """A long date in ``language``; Polish for any language without its own format."""
    return format_date_en(value) if language == "en" else format_date_pl(value)


@functools.lru_cache(maxsize=8)
def environment(directory: Path | None = None) -> jinja2.Environment:
    """The one Environment for ``directory`` (default: ``TEMPLATES_DIR``)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory or TEMPLATES_DIR, encoding="utf-8"),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), default_for_string=False, default=False
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["date_pl"] = format_date_pl
    env.filters["date_en"] = format_date_en
    env.filters["date_long"] = format_date
    # One vocabulary for pages, mail and reports: {{ kind_label("session", kind, lang) }}.
    env.globals["kind_label"] = vocabulary.kind_label
    env.globals["session_kind_phrase"] = vocabulary.session_kind_phrase
    env.globals["format_size"] = wording.format_size
    env.globals["format_pages"] = wording.format_pages
    return env


def template_names(name: str, language: str) -> list[str]:
    """The files tried for ``name`` in ``language``, most specific first."""
    match = _NAME.fullmatch(name)
    if match is None:  # also keeps ".." out: the stem has no dots
        raise ValueError(f"template name {name!r}: expected a path like 'mail/welcome.txt'")
    if not _LANGUAGE.fullmatch(language):
        raise ValueError(f"language {language!r}: expected a two-letter code such as 'pl'")
    stem, ext = match["stem"], match["ext"]
    names = [f"{stem}.{language}.{ext}.j2"]
    if language != DEFAULT_LANGUAGE:
        names.append(f"{stem}.{DEFAULT_LANGUAGE}.{ext}.j2")
    return names


def render(name: str, language: str, /, **context: Any) -> str:
    """Render ``<stem>.<language>.<ext>.j2``, or its Polish sibling if that file is missing.

    ``context`` keys are the template's variables; ``lang`` is added (unless given) as the
    language of the file actually rendered. A missing variable raises ``jinja2.UndefinedError``
    (StrictUndefined), and a missing Polish template ``jinja2.TemplatesNotFound``.
    """
    # Read TEMPLATES_DIR at call time so tests can point it at a temporary directory.
    names = template_names(name, language)
    template = environment(TEMPLATES_DIR).select_template(names)
    # The language actually rendered: an English request served by the Polish file is Polish.
    context.setdefault("lang", language if template.name == names[0] else DEFAULT_LANGUAGE)
    return template.render(**context)
