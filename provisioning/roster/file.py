"""Reading a roster file: size limits, binary files, and the encoding (detected or given)."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from pathlib import Path

from provisioning.roster.result import Roster, RosterFileError
from provisioning.roster.rows import parse_roster_text

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
_SNIFF_BYTES = 8 * 1024
# Share of control bytes above which a file is not text, whatever its encoding.
_MAX_CONTROL_SHARE = 0.05
_POLISH_LETTERS = frozenset("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ")
# What ISO-8859-2 ą/ś/Ą/Ś/Ź bytes look like when decoded as Windows-1250.
_LATIN2_TELLTALES = frozenset("±¶¦¬ˇ")


# --- decoding ------------------------------------------------------------------------------


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _check_not_binary(raw: bytes, path: str) -> None:
    sample = raw[:_SNIFF_BYTES]
    if sample.startswith(b"PK\x03\x04"):
        raise RosterFileError(
            path,
            "this is an Excel workbook (.xlsx) or another ZIP file, not CSV; "
            "in Excel use Save As → 'CSV UTF-8 (Comma delimited)'",
        )
    if sample.startswith(b"\xd0\xcf\x11\xe0"):
        raise RosterFileError(
            path,
            "this is an old Excel workbook (.xls), not CSV; "
            "in Excel use Save As → 'CSV UTF-8 (Comma delimited)'",
        )
    if b"\x00" in sample:
        raise RosterFileError(path, "binary file (it contains NUL bytes), not a CSV text file")
    control = sum(
        1 for byte in sample if (byte < 0x20 and byte not in b"\t\n\r\f\v") or byte == 0x7F
    )
    if control > len(sample) * _MAX_CONTROL_SHARE:
        raise RosterFileError(path, "binary file (mostly non-text bytes), not a CSV text file")


def _decode_explicit(raw: bytes, path: str, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise RosterFileError(
            path, f"unknown encoding {encoding!r}; use e.g. utf-8 or cp1250"
        ) from None
    if not codec.name.startswith(("utf-16", "utf-32")):
        _check_not_binary(raw, path)
    try:
        return raw.decode(codec.name)
    except UnicodeDecodeError as exc:
        raise RosterFileError(
            path,
            f"byte 0x{raw[exc.start]:02x} cannot be decoded as {encoding}; "
            "check the --encoding option",
            line=_line_of(raw, exc.start),
        ) from None


def _decode_detected(raw: bytes, path: str) -> tuple[str, str]:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise RosterFileError(
            path,
            "the file is UTF-16 (Excel's 'Unicode text'); save it as 'CSV UTF-8' instead",
        )
    _check_not_binary(raw, path)
    if raw.startswith(codecs.BOM_UTF8):
        bom = len(codecs.BOM_UTF8)
        try:
            return raw[bom:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise RosterFileError(
                path,
                "the file starts with a UTF-8 byte-order mark but this line is not valid "
                "UTF-8; pass --encoding with the right encoding",
                line=_line_of(raw, bom + exc.start),
            ) from None
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        first_bad_line = _line_of(raw, exc.start)
    try:
        text = raw.decode("cp1250")
    except UnicodeDecodeError:
        text = ""
    if any(char in _POLISH_LETTERS for char in text) and not any(
        char in _LATIN2_TELLTALES for char in text
    ):
        return text, "cp1250"
    raise RosterFileError(
        path,
        "unknown encoding: this line is not UTF-8 and the file does not look like "
        "Windows-1250; pass --encoding cp1250 (or the right one, e.g. iso-8859-2)",
        line=first_bad_line,
    )


# --- reading -------------------------------------------------------------------------------


def read_roster(
    path: Path | str,
    *,
    encoding: str | None = None,
    committees: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Roster:
    """Read and parse a roster file; ``encoding`` overrides detection.

    ``committees`` maps slug → display name; when given, every committee in the file must be
    one of them. Raises RosterFileError for whole-file problems; row problems are returned.
    """
    shown = str(path)
    file = Path(path)
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise RosterFileError(shown, "file not found") from None
    except OSError as exc:
        raise RosterFileError(shown, f"cannot read the file: {exc.strerror}") from None
    if file.is_dir():
        raise RosterFileError(shown, "this is a directory, not a roster file")
    if size > max_bytes:
        raise RosterFileError(shown, _too_large(size, max_bytes))
    try:
        with file.open("rb") as stream:
            raw = stream.read(max_bytes + 1)
    except OSError as exc:
        raise RosterFileError(shown, f"cannot read the file: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise RosterFileError(
            shown, f"the file grew over the limit of {max_bytes} bytes while being read"
        )
    if not raw.strip() or raw.strip() == codecs.BOM_UTF8:
        raise RosterFileError(shown, "the file is empty")
    if encoding is not None:
        text, used = _decode_explicit(raw, shown, encoding), encoding
    else:
        text, used = _decode_detected(raw, shown)
    del raw  # not held beside the text and the entries while a large file is parsed
    return parse_roster_text(text, path=shown, committees=committees, encoding=used)


def _too_large(size: int, limit: int) -> str:
    return (
        f"the file is {size} bytes, over the limit of {limit} bytes; "
        "a roster of a council is far smaller, check that this is the right file"
    )
