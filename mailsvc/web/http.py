"""Small HTTP pieces the acknowledgement pages, the clerks' pages and the API share: which
language a page is in, its Content-Security-Policy, reading an upload, naming a download."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.requests import Request

from mailsvc.domain.vocabulary import LANGUAGES

UPLOAD_BLOCK = 1024 * 1024


def pick_language(request: Request, *preferred: str | None, default: str) -> str:
    """``?lang=`` if supported, else the first supported of ``preferred``, else ``default``."""
    for candidate in (request.query_params.get("lang"), *preferred):
        if candidate in LANGUAGES:
            return candidate
    return default


def other_language(language: str) -> str:
    """The language the page's switch links to."""
    return "en" if language == "pl" else "pl"


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def page_csp(nonce: str, *, scripts: bool = False) -> str:
    """A page may load from its own origin and run only the <style> (and, for the clerks'
    pages, <script>) elements carrying this response's nonce."""
    script = f"script-src 'nonce-{nonce}'; " if scripts else ""
    return (
        f"default-src 'self'; style-src 'nonce-{nonce}'; {script}img-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


async def upload_blocks(upload: UploadFile) -> AsyncIterator[bytes]:
    """An uploaded file in 1 MB blocks (for ``ClerkActions.save_upload``, which bounds it)."""
    while block := await upload.read(UPLOAD_BLOCK):
        yield block


_POLISH_ASCII = str.maketrans("łŁ", "lL")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9 ._()+-]", re.ASCII)


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` and the exact UTF-8 ``filename*`` (RFC 6266).

    Old clients read the ASCII fallback ("Uchwala nr 12.pdf"); current ones read ``filename*``
    ("Uchwała nr 12.pdf"). Path separators, quotes and control characters never reach either.
    """
    name = filename.replace("/", "_").replace("\\", "_").strip() or "document"
    decomposed = unicodedata.normalize("NFKD", name.translate(_POLISH_ASCII))
    ascii_name = "".join(c for c in decomposed if not unicodedata.combining(c))
    fallback = _UNSAFE_FILENAME.sub("_", ascii_name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
