"""Session documents: what a file really is, its hash and page count, and whether it may go out.

A clerk attaches files (PDF, DOCX, ODT, …) to a council session; they are stored by SHA-256 and
sent to councillors. The type is decided by the CONTENT, never by the name: a renamed archive or
program is refused with a message saying what the file really is. Pure except for reading the
given file; nothing is extracted to disk, and reads from ZIP members are capped so that a
"zip bomb" costs at most ``ZIP_MEMBER_CAP`` bytes of memory.

Public API: :func:`detect_type`, :func:`check_document`, :func:`page_count`,
:func:`sanitize_filename`, :class:`DocumentType`, :class:`DocumentInfo`,
:class:`DocumentRejected`.
"""

from __future__ import annotations

import codecs
import hashlib
import lzma
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pypdf import PdfReader

from mailsvc.errors import PermanentFailure

CHUNK = 1 << 16  # bytes read at a time when hashing and checking text
ZIP_MEMBER_CAP = 1 << 20  # at most this many (decompressed) bytes are read from a ZIP member
HEAD = 8  # bytes of magic numbers looked at


@dataclass(frozen=True)
class DocumentType:
    """A file format: canonical ``name`` ("pdf"), ``media_type`` for MIME, ``extensions`` (lower
    case with the dot; the first is the usual one)."""

    name: str
    media_type: str
    extensions: tuple[str, ...]


def _type(name: str, media_type: str, *extensions: str) -> DocumentType:
    return DocumentType(name, media_type, extensions)


_OOXML = "application/vnd.openxmlformats-officedocument"
_ODF = "application/vnd.oasis.opendocument"

TYPES: Mapping[str, DocumentType] = {
    t.name: t
    for t in (
        _type("pdf", "application/pdf", ".pdf"),
        _type("docx", f"{_OOXML}.wordprocessingml.document", ".docx"),
        _type("xlsx", f"{_OOXML}.spreadsheetml.sheet", ".xlsx"),
        _type("pptx", f"{_OOXML}.presentationml.presentation", ".pptx"),
        _type("odt", f"{_ODF}.text", ".odt"),
        _type("ods", f"{_ODF}.spreadsheet", ".ods"),
        _type("odp", f"{_ODF}.presentation", ".odp"),
        _type("doc", "application/msword", ".doc"),
        _type("xls", "application/vnd.ms-excel", ".xls"),
        _type("rtf", "application/rtf", ".rtf"),
        _type("txt", "text/plain", ".txt"),
        _type("png", "image/png", ".png"),
        _type("jpeg", "image/jpeg", ".jpg", ".jpeg"),
        # Recognised so that a refusal can say what the file is; never allowed.
        _type("ppt", "application/vnd.ms-powerpoint", ".ppt"),
        _type("office-macro", "application/vnd.ms-office", ".docm", ".xlsm", ".pptm"),
        _type("ole2", "application/x-ole-storage", ".msi"),
        _type("zip", "application/zip", ".zip"),
        _type("gzip", "application/gzip", ".gz", ".tgz"),
        _type("7z", "application/x-7z-compressed", ".7z"),
        _type("rar", "application/vnd.rar", ".rar"),
        _type("exe", "application/vnd.microsoft.portable-executable", ".exe", ".dll", ".scr"),
        _type("elf", "application/x-executable"),
        _type("macho", "application/x-mach-binary"),
    )
}

ALLOWED: frozenset[str] = frozenset(
    ("pdf", "docx", "odt", "xlsx", "ods", "doc", "xls", "rtf", "txt", "png", "jpeg", "pptx", "odp")
)

# Polish (nominative, instrumental) and English names for messages.
_LABELS: Mapping[str, tuple[str, str, str]] = {
    "pdf": ("dokument PDF", "dokumentem PDF", "a PDF document"),
    "docx": ("dokument Word DOCX", "dokumentem Word DOCX", "a Word DOCX document"),
    "xlsx": ("arkusz Excel XLSX", "arkuszem Excel XLSX", "an Excel XLSX workbook"),
    "pptx": (
        "prezentacja PowerPoint PPTX",
        "prezentacją PowerPoint PPTX",
        "a PowerPoint PPTX presentation",
    ),
    "odt": ("dokument tekstowy ODT", "dokumentem tekstowym ODT", "an ODT text document"),
    "ods": ("arkusz ODS", "arkuszem ODS", "an ODS spreadsheet"),
    "odp": ("prezentacja ODP", "prezentacją ODP", "an ODP presentation"),
    "doc": ("dokument Word DOC", "dokumentem Word DOC", "a Word DOC document"),
    "xls": ("arkusz Excel XLS", "arkuszem Excel XLS", "an Excel XLS workbook"),
    "rtf": ("dokument RTF", "dokumentem RTF", "an RTF document"),
    "txt": ("plik tekstowy UTF-8", "plikiem tekstowym UTF-8", "a UTF-8 text file"),
    "png": ("obraz PNG", "obrazem PNG", "a PNG image"),
    "jpeg": ("obraz JPEG", "obrazem JPEG", "a JPEG image"),
    "ppt": ("prezentacja PowerPoint PPT", "prezentacją PowerPoint PPT", "a PowerPoint PPT file"),
    "office-macro": (
        "dokument Office z makrami",
        "dokumentem Office z makrami",
        "an Office document with macros",
    ),
    "ole2": (
        "plik złożony Microsoft, np. instalator MSI lub zaszyfrowany dokument",
        "plikiem złożonym Microsoft",
        "a Microsoft compound file, e.g. an MSI installer or an encrypted document",
    ),
    "zip": ("archiwum ZIP", "archiwum ZIP", "a ZIP archive"),
    "gzip": ("archiwum GZIP", "archiwum GZIP", "a GZIP archive"),
    "7z": ("archiwum 7-Zip", "archiwum 7-Zip", "a 7-Zip archive"),
    "rar": ("archiwum RAR", "archiwum RAR", "a RAR archive"),
    "exe": ("program Windows", "programem Windows", "a Windows program"),
    "elf": ("program ELF", "programem ELF", "an ELF program"),
    "macho": ("program macOS", "programem macOS", "a macOS program"),
}
_UNKNOWN = ("nieznany format", "nieznanym formatem", "an unknown format")


def describe_type(doc_type: DocumentType | None, language: str = "pl") -> str:
    """'dokument PDF' / 'a PDF document'; 'nieznany format' for None."""
    labels = _LABELS[doc_type.name] if doc_type else _UNKNOWN
    return labels[0] if language == "pl" else labels[2]


# --- detection ------------------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"{\\rtf", "rtf"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"\x7fELF", "elf"),
    (b"\xfe\xed\xfa\xce", "macho"),
    (b"\xfe\xed\xfa\xcf", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"),
    (b"\xcf\xfa\xed\xfe", "macho"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

# Errors a damaged or hostile ZIP can raise while listing or reading members.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    RuntimeError,  # encrypted member
    NotImplementedError,  # unsupported compression
    EOFError,
    OSError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
)

_ODF_TYPES = {TYPES[n].media_type: n for n in ("odt", "ods", "odp")}

# Main-part content types in [Content_Types].xml (compared in lower case).
_OOXML_MAIN = {
    f"{_OOXML}.wordprocessingml.document.main+xml": "docx",
    f"{_OOXML}.spreadsheetml.sheet.main+xml": "xlsx",
    f"{_OOXML}.presentationml.presentation.main+xml": "pptx",
    "application/vnd.ms-word.document.macroenabled.main+xml": "office-macro",
    "application/vnd.ms-word.template.macroenabledtemplate.main+xml": "office-macro",
    "application/vnd.ms-excel.sheet.macroenabled.main+xml": "office-macro",
    "application/vnd.ms-excel.sheet.binary.macroenabled.main": "office-macro",
    "application/vnd.ms-excel.template.macroenabled.main+xml": "office-macro",
    "application/vnd.ms-powerpoint.presentation.macroenabled.main+xml": "office-macro",
    "application/vnd.ms-powerpoint.slideshow.macroenabled.main+xml": "office-macro",
}
_CONTENT_TYPE_ATTR = re.compile(rb'ContentType\s*=\s*["\']([^"\']+)["\']')
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # controls other than \t\n\f\r


def detect_type(path: Path) -> DocumentType | None:
    """The format of the file at ``path`` judged by its content, or None if unrecognised.

    Returns recognised but forbidden formats too (ZIP, programs, macro documents), so that a
    refusal can name them; :data:`ALLOWED` says which may be sent.
    """
    with path.open("rb") as fh:
        head = fh.read(HEAD)
        if head.startswith(_ZIP_MAGIC):
            return TYPES[_zip_kind(fh)]
        if head.startswith(_OLE2_MAGIC):
            return TYPES[_ole2_kind(fh)]
        for magic, name in _MAGIC:
            if head.startswith(magic):
                return TYPES[name]
        if head.startswith(b"MZ") and _is_portable_executable(fh):
            return TYPES["exe"]
        fh.seek(0)
        return TYPES["txt"] if head and _is_utf8_text(fh) else None


def _is_portable_executable(fh: BinaryIO) -> bool:
    """An "MZ" header whose e_lfanew points at "PE\\0\\0" (a text may well start with "MZK")."""
    fh.seek(0x3C)
    pointer = fh.read(4)
    if len(pointer) < 4 or _u32(pointer, 0) > 1 << 16:
        return False
    fh.seek(_u32(pointer, 0))
    return fh.read(4) == b"PE\0\0"


def _is_utf8_text(fh: BinaryIO) -> bool:
    """Valid UTF-8 throughout (checked in chunks) with no NUL or other stray control bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        while chunk := fh.read(CHUNK):
            if _TEXT_FORBIDDEN.search(decoder.decode(chunk)):
                return False
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _read_member(archive: zipfile.ZipFile, name: str, cap: int = ZIP_MEMBER_CAP) -> bytes | None:
    """The member's bytes, or None if it is missing, unreadable or larger than ``cap``.

    Reads at most ``cap + 1`` decompressed bytes whatever the member claims its size is.
    """
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    try:
        with archive.open(info) as member:
            data = member.read(cap + 1)
    except _ZIP_ERRORS:
        return None
    return data if len(data) <= cap else None


def _zip_kind(fh: BinaryIO) -> str:
    """'odt'/'ods'/'odp' from the ODF ``mimetype`` member, 'docx'/'xlsx'/'pptx' (or
    'office-macro') from the OOXML main part's content type, else 'zip'."""
    try:
        with zipfile.ZipFile(fh) as archive:
            mimetype = _read_member(archive, "mimetype", cap=256)
            if mimetype is not None:
                kind = _ODF_TYPES.get(mimetype.decode("ascii", "replace").strip())
                if kind:
                    return kind
            content_types = _read_member(archive, "[Content_Types].xml")
            if content_types is not None:
                for found in _CONTENT_TYPE_ATTR.findall(content_types):
                    kind = _OOXML_MAIN.get(found.decode("ascii", "replace").strip().lower())
                    if kind:
                        return kind
    except _ZIP_ERRORS:
        pass
    return "zip"


# Compound File Binary (MS-CFB): just enough to list the directory's stream names.
_OLE_MAX_REGULAR = 0xFFFFFFFA
_OLE_END = 0xFFFFFFFE
_OLE_DIR_SECTORS = 256  # directory sectors read at most (top-level streams come first)
_OLE_ENTRY = 128


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _ole2_kind(fh: BinaryIO) -> str:
    """'doc', 'xls', 'ppt' or 'office-macro' from the stream names; 'ole2' for anything else
    (an MSI installer, an encrypted OOXML package, a damaged file)."""
    names = {name.casefold() for name in _ole2_names(fh)}
    if names & {"macros", "_vba_project_cur", "vba"}:
        return "office-macro"
    if "worddocument" in names:
        return "doc"
    if names & {"workbook", "book"}:
        return "xls"
    if "powerpoint document" in names:
        return "ppt"
    return "ole2"


def _ole2_names(fh: BinaryIO) -> list[str]:
    """Names of the storages and streams in a compound file, or [] if it cannot be read."""
    fh.seek(0)
    header = fh.read(512)
    if len(header) < 512:
        return []
    shift = int.from_bytes(header[0x1E:0x20], "little")
    if shift not in (9, 12):
        return []
    size = 1 << shift

    def sector(number: int) -> bytes | None:
        fh.seek((number + 1) * size)
        data = fh.read(size)
        return data if len(data) == size else None

    # The FAT's own sectors: 109 listed in the header, the rest in the DIFAT chain. No more are
    # read than the file's size can need, whatever the header claims.
    fh.seek(0, 2)
    needed = fh.tell() // size // (size // 4) + 1
    fat = [_u32(header, 0x4C + 4 * i) for i in range(109)]
    difat, seen = _u32(header, 0x44), set[int]()
    while difat <= _OLE_MAX_REGULAR and difat not in seen and len(fat) < needed + 109:
        seen.add(difat)
        data = sector(difat)
        if data is None:
            break
        links = [_u32(data, 4 * i) for i in range(size // 4)]
        fat.extend(links[:-1])
        difat = links[-1]
    fat = [s for s in fat if s <= _OLE_MAX_REGULAR]

    def next_sector(number: int) -> int:
        index, slot = divmod(number, size // 4)
        if index >= len(fat):
            return _OLE_END
        fh.seek((fat[index] + 1) * size + 4 * slot)
        link = fh.read(4)
        return _u32(link, 0) if len(link) == 4 else _OLE_END

    names: list[str] = []
    current, visited = _u32(header, 0x30), set[int]()
    while current <= _OLE_MAX_REGULAR and current not in visited:
        if len(visited) >= _OLE_DIR_SECTORS:
            break
        visited.add(current)
        data = sector(current)
        if data is None:
            break
        for offset in range(0, size, _OLE_ENTRY):
            entry = data[offset : offset + _OLE_ENTRY]
            length = int.from_bytes(entry[0x40:0x42], "little")  # bytes, with the final NUL
            if entry[0x42] in (1, 2) and 2 <= length <= 64 and length % 2 == 0:
                names.append(entry[: length - 2].decode("utf-16-le", "replace"))
        current = next_sector(current)
    return names


# --- page count -----------------------------------------------------------------------------

_OOXML_PAGES = re.compile(rb"<(?:\w+:)?Pages>\s*(\d{1,7})\s*</(?:\w+:)?Pages>")
_ODF_PAGES = re.compile(rb"""(?:\w+:)?page-count\s*=\s*["'](\d{1,7})["']""")


def page_count(path: Path, doc_type: DocumentType | None) -> int | None:
    """Pages of a PDF (pypdf), a DOCX (docProps/app.xml ``<Pages>``, as last saved by the
    editor) or an ODT (meta.xml ``meta:page-count``); None for other formats and whenever the
    count cannot be read. Never raises for a damaged file."""
    if doc_type is None:
        return None
    if doc_type.name == "pdf":
        return _pdf_pages(path)
    member, pattern = {
        "docx": ("docProps/app.xml", _OOXML_PAGES),
        "odt": ("meta.xml", _ODF_PAGES),
    }.get(doc_type.name, ("", None))
    if pattern is None:
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            data = _read_member(archive, member)
    except _ZIP_ERRORS:
        return None
    found = pattern.search(data) if data is not None else None
    pages = int(found[1]) if found else 0
    return pages if pages > 0 else None


def _pdf_pages(path: Path) -> int | None:
    try:
        # An open file, not the path: given a path, pypdf reads the whole file into memory.
        with path.open("rb") as fh:
            pages = len(PdfReader(fh).pages)
    except Exception:  # pypdf raises many kinds on damaged input; a count is only a nicety
        return None
    return pages if pages > 0 else None


# --- names ----------------------------------------------------------------------------------

MAX_NAME_CHARS = 120
_MAX_NAME_BYTES = 240  # below the usual 255-byte file-system limit, in UTF-8
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
FALLBACK_STEM = "dokument"


def split_extension(name: str) -> tuple[str, str]:
    """('uchwała nr 5', '.pdf') from 'uchwała nr 5.pdf'; ('wersja 1.2 uchwały', '') when what
    follows the last dot is not an extension (a space in it, or longer than 10 characters)."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or not extension or " " in extension or len(extension) > 10:
        return name, ""
    return stem, "." + extension


def sanitize_filename(filename: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """A safe attachment name from what the clerk's browser sent.

    Keeps the last path component (``/`` or ``\\``), composes diacritics (NFC: a macOS upload's
    "ż" stays one letter), drops control and format characters (including the right-to-left
    override that hides a real extension), replaces characters Windows forbids with "_", collapses
    white space, trims dots and spaces at the ends, guards Windows device names and shortens the
    stem so that the name fits ``max_chars`` characters and 240 UTF-8 bytes, keeping the extension.
    """
    name = unicodedata.normalize("NFC", filename)
    name = re.split(r"[/\\]", name)[-1]
    kept = []
    for char in name:
        if char.isspace():
            kept.append(" ")
        elif not unicodedata.category(char).startswith("C"):
            kept.append(char)
    name = _WINDOWS_FORBIDDEN.sub("_", "".join(kept))
    name = re.sub(r"\s+", " ", name).strip(" .")
    stem, extension = split_extension(name)
    stem = stem.rstrip(" .")
    if stem.upper() in _WINDOWS_DEVICES:
        stem = "_" + stem
    while stem and (
        len(stem) + len(extension) > max_chars
        or len((stem + extension).encode("utf-8")) > _MAX_NAME_BYTES
    ):
        stem = stem[:-1].rstrip(" .")
    return (stem or FALLBACK_STEM) + extension


# --- the check ------------------------------------------------------------------------------


class DocumentRejected(PermanentFailure, ValueError):
    """The file may not be attached; ``message`` says why in the clerk's language.

    ``reason`` is one of "empty", "mismatch" (the content is not what the extension says),
    "no-extension" or "not-allowed".
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class DocumentInfo:
    """A checked document: its safe name, SHA-256 (hex), size in bytes, format and pages."""

    filename: str
    sha256: str
    size: int
    doc_type: DocumentType
    pages: int | None

    @property
    def media_type(self) -> str:
        return self.doc_type.media_type


_MESSAGES: Mapping[str, Mapping[str, str]] = {
    "empty": {
        "pl": "Plik „{name}” jest pusty.",
        "en": "The file “{name}” is empty.",
    },
    "mismatch": {
        "pl": "Plik „{name}” nie jest {expected} (zawartość: {content}).",
        "en": "The file “{name}” is not {expected} (content: {content}).",
    },
    "rename": {
        "pl": "Plik „{name}” nie ma rozszerzenia; zawartość to {content}. Nazwij go „{suggested}”.",
        "en": (
            "The file “{name}” has no extension; its content is {content}. Name it “{suggested}”."
        ),
    },
    "no-extension": {
        "pl": (
            "Plik „{name}” nie ma rozszerzenia, a jego zawartość ({content}) nie jest dozwolona. "
            "Dozwolone typy: {allowed}."
        ),
        "en": (
            "The file “{name}” has no extension and its content ({content}) is not allowed. "
            "Allowed types: {allowed}."
        ),
    },
    "not-allowed": {
        "pl": (
            "Plik „{name}” ma niedozwolone rozszerzenie „{extension}” (zawartość: {content}). "
            "Dozwolone typy: {allowed}."
        ),
        "en": (
            "The file “{name}” has an extension that is not allowed, “{extension}” "
            "(content: {content}). Allowed types: {allowed}."
        ),
    },
}

# Message order: documents first, then spreadsheets and presentations, then the rest.
_ALLOWED_ORDER = (
    "pdf",
    "docx",
    "odt",
    "doc",
    "rtf",
    "txt",
    "xlsx",
    "ods",
    "xls",
    "pptx",
    "odp",
    "png",
    "jpeg",
)
_BY_EXTENSION = {ext: TYPES[name] for name in ALLOWED for ext in TYPES[name].extensions}


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_document(path: Path, filename: str, language: str = "pl") -> DocumentInfo:
    """Check the file at ``path`` that the clerk uploaded as ``filename``.

    The content decides the format; the (sanitised) name's extension must be one of that
    format's extensions and the format must be in :data:`ALLOWED`. Raises
    :class:`DocumentRejected` otherwise, or when the file is empty. The hash is computed in
    chunks of ``CHUNK`` bytes, so memory stays bounded for any size.
    """
    lang = "pl" if language == "pl" else "en"
    name = sanitize_filename(filename)

    def reject(reason: str, key: str | None = None, **values: str) -> DocumentRejected:
        allowed = ", ".join(n.upper() for n in _ALLOWED_ORDER)
        text = _MESSAGES[key or reason][lang].format(name=name, allowed=allowed, **values)
        return DocumentRejected(text, reason)

    sha256, size = _sha256_and_size(path)
    if size == 0:
        raise reject("empty")
    found = detect_type(path)
    content = describe_type(found, lang)
    extension = split_extension(name)[1].lower()
    expected = _BY_EXTENSION.get(extension)

    if found is not None and found == expected:
        return DocumentInfo(name, sha256, size, found, page_count(path, found))
    if expected is not None:
        labels = _LABELS[expected.name]
        raise reject("mismatch", expected=labels[1] if lang == "pl" else labels[2], content=content)
    if not extension:
        if found is not None and found.name in ALLOWED:
            suggested = sanitize_filename(name + found.extensions[0])
            raise reject("no-extension", "rename", content=content, suggested=suggested)
        raise reject("no-extension", content=content)
    raise reject("not-allowed", extension=extension, content=content)
