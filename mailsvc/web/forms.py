"""Reading the clerks' HTML forms: bounded text fields, local times, redirect targets."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from starlette.datastructures import FormData

from mailsvc.web.actions import ActionError

# Bounds of any POST the clerks' pages parse (the upload form sends up to MAX_FILES files).
MAX_FILES = 50
MAX_FIELDS = 500

# The distribution form's fields, repeated as hidden inputs on the confirmation page.
DISTRIBUTION_FIELDS = ("kind", "at", "note", "new_date", "documents", "committee")


def form_text(form: FormData, name: str, limit: int = 10_000) -> str:
    """A text field, cut at ``limit`` characters; "" when absent or a file."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def local_input(value: str, field_name: str, language: str) -> datetime | None:
    """A ``datetime-local`` field ("2026-05-14T16:00") or None when empty."""
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace(" ", "T")).replace(tzinfo=None)
    except ValueError:
        raise ActionError(
            f"Field “{field_name}”: give a date and time, e.g. 2026-05-14 16:00."
            if language == "en"
            else f"Pole „{field_name}”: podaj datę i godzinę, np. 2026-05-14 16:00."
        ) from None


def safe_next(target: str | None) -> str:
    """Only local paths: a login link must not send the clerk elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/"
    return target


def echo_fields(
    form: FormData, names: tuple[str, ...] = DISTRIBUTION_FIELDS
) -> list[tuple[str, str]]:
    """``names``' values as (name, value) pairs, to repeat as hidden inputs."""
    out = []
    for name in names:
        for value in form.getlist(name):
            if isinstance(value, str):
                out.append((name, value))
    return out
