"""Session documents: type by content, page counts, names, hashes and refusals.

Every sample is a real small file built here: PDFs from fpdf2, DOCX/ODT/… as ZIPs with the
members those formats require, OLE2 compound files written sector by sector.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import tracemalloc
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fpdf import FPDF

from mailsvc.domain.documents import (
    ALLOWED,
    CHUNK,
    TYPES,
    ZIP_MEMBER_CAP,
    DocumentRejected,
    check_document,
    detect_type,
    page_count,
    sanitize_filename,
)
from mailsvc.errors import PermanentFailure

# --- sample builders ------------------------------------------------------------------------

OOXML = "application/vnd.openxmlformats-officedocument"


def pdf_bytes(pages: int) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for number in range(pages):
        pdf.add_page()
        pdf.cell(text=f"Projekt uchwaly, strona {number + 1}")
    return bytes(pdf.output())


def write_zip(path: Path, members: dict[str, bytes], *, stored_first: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        if stored_first is not None:
            archive.writestr(stored_first, members.pop(stored_first), zipfile.ZIP_STORED)
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_ooxml(path: Path, main_type: str, main_part: str, pages: int | None = None) -> Path:
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/{main_part}" ContentType="{main_type}"/>'
        '<Override PartName="/docProps/app.xml" '
        f'ContentType="{OOXML}.extended-properties+xml"/>'
        "</Types>"
    )
    members = {
        "[Content_Types].xml": content_types.encode(),
        "_rels/.rels": b"<Relationships/>",
        main_part: b"<document/>",
    }
    if pages is not None:
        members["docProps/app.xml"] = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
            'extended-properties"><Application>Microsoft Office Word</Application>'
            f"<Pages>{pages}</Pages><Words>120</Words></Properties>"
        ).encode()
    write_zip(path, members)
    return path


def write_docx(path: Path, pages: int | None = None) -> Path:
    return write_ooxml(
        path, f"{OOXML}.wordprocessingml.document.main+xml", "word/document.xml", pages
    )


def write_odf(path: Path, kind: str, pages: int | None = None) -> Path:
    meta = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-meta '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0"><office:meta>'
        + (
            f'<meta:document-statistic meta:table-count="0" meta:page-count="{pages}" '
            'meta:word-count="120"/>'
            if pages is not None
            else ""
        )
        + "</office:meta></office:document-meta>"
    )
    write_zip(
        path,
        {
            "mimetype": f"application/vnd.oasis.opendocument.{kind}".encode(),
            "content.xml": b"<office:document-content/>",
            "meta.xml": meta.encode(),
            "META-INF/manifest.xml": b"<manifest:manifest/>",
        },
        stored_first="mimetype",
    )
    return path


ENDOFCHAIN, FREESECT, FATSECT = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD


def ole2_bytes(streams: list[str], *, via_difat: bool = False) -> bytes:
    """A compound file (512-byte sectors) whose directory lists ``streams`` after the root.

    Sector 0 holds the FAT; the directory follows, four entries a sector, chained through the
    FAT in REVERSE physical order so that a reader must follow the chain. With ``via_difat``
    the FAT sector is listed in a DIFAT sector instead of the header.
    """
    entries = [("Root Entry", 5)] + [(name, 2) for name in streams]
    dir_count = -(-len(entries) // 4)
    dir_sectors = list(range(dir_count, 0, -1))  # chain: last physical first
    difat_sector = dir_count + 1
    fat = [FREESECT] * 128
    fat[0] = FATSECT
    for current, following in itertools.pairwise(dir_sectors):
        fat[current] = following
    fat[dir_sectors[-1]] = ENDOFCHAIN
    header = bytearray(512)
    header[0:8] = bytes.fromhex("d0cf11e0a1b11ae1")
    struct.pack_into("<HHHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<III", header, 0x2C, 1, dir_sectors[0], 0)
    struct.pack_into("<III", header, 0x38, 4096, ENDOFCHAIN, 0)
    difat_in_header = [FREESECT] * 109
    if via_difat:
        fat[difat_sector] = 0xFFFFFFFC  # DIFSECT
        struct.pack_into("<II", header, 0x44, difat_sector, 1)
    else:
        difat_in_header[0] = 0
        struct.pack_into("<II", header, 0x44, ENDOFCHAIN, 0)
    struct.pack_into("<109I", header, 0x4C, *difat_in_header)

    physical: dict[int, bytes] = {0: struct.pack("<128I", *fat)}
    for index, number in enumerate(dir_sectors):
        sector = bytearray(512)
        for slot, (name, kind) in enumerate(entries[index * 4 : index * 4 + 4]):
            encoded = name.encode("utf-16-le")
            entry = bytearray(128)
            entry[: len(encoded)] = encoded
            struct.pack_into("<HBB", entry, 0x40, len(encoded) + 2, kind, 1)
            struct.pack_into("<III", entry, 0x44, FREESECT, FREESECT, FREESECT)
            struct.pack_into("<I", entry, 0x74, ENDOFCHAIN)
            sector[slot * 128 : slot * 128 + 128] = entry
        physical[number] = bytes(sector)
    if via_difat:
        physical[difat_sector] = struct.pack("<128I", 0, *([FREESECT] * 126), ENDOFCHAIN)
    return bytes(header) + b"".join(physical[n] for n in sorted(physical))


def pe_bytes() -> bytes:
    data = bytearray(256)
    data[0:2] = b"MZ"
    struct.pack_into("<I", data, 0x3C, 0x80)
    data[0x80:0x84] = b"PE\0\0"
    return bytes(data)


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
POLISH = "Zażółć gęślą jaźń. Porządek obrad sesji Rady Miasta.\n"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- detection ------------------------------------------------------------------------------

Builder = Callable[[Path], Path]

SAMPLES: list[tuple[str, Builder, str | None]] = [
    ("pdf", lambda p: write(p, pdf_bytes(1)), "pdf"),
    ("docx", write_docx, "docx"),
    (
        "xlsx",
        lambda p: write_ooxml(p, f"{OOXML}.spreadsheetml.sheet.main+xml", "xl/workbook.xml"),
        "xlsx",
    ),
    (
        "pptx",
        lambda p: write_ooxml(
            p, f"{OOXML}.presentationml.presentation.main+xml", "ppt/presentation.xml"
        ),
        "pptx",
    ),
    (
        "docm",
        lambda p: write_ooxml(
            p, "application/vnd.ms-word.document.macroEnabled.main+xml", "word/document.xml"
        ),
        "office-macro",
    ),
    ("odt", lambda p: write_odf(p, "text"), "odt"),
    ("ods", lambda p: write_odf(p, "spreadsheet"), "ods"),
    ("odp", lambda p: write_odf(p, "presentation"), "odp"),
    ("odt-template", lambda p: write_odf(p, "text-template"), "zip"),
    ("zip", lambda p: write_zip(p, {"uchwała.pdf": pdf_bytes(1)}), "zip"),
    ("doc", lambda p: write(p, ole2_bytes(["\x05SummaryInformation", "WordDocument"])), "doc"),
    ("xls", lambda p: write(p, ole2_bytes(["Workbook"])), "xls"),
    ("xls-biff5", lambda p: write(p, ole2_bytes(["Book"])), "xls"),
    ("ppt", lambda p: write(p, ole2_bytes(["PowerPoint Document"])), "ppt"),
    (
        "doc-macros",
        lambda p: write(p, ole2_bytes(["WordDocument", "Macros", "VBA", "dir"])),
        "office-macro",
    ),
    ("msi", lambda p: write(p, ole2_bytes(["\u4840\u3b3f\u4577\u446c"])), "ole2"),
    ("ole2-truncated", lambda p: write(p, ole2_bytes(["WordDocument"])[:600]), "ole2"),
    ("rtf", lambda p: write(p, b"{\\rtf1\\ansi\\ansicpg1250 Porz\\'b9dek obrad}"), "rtf"),
    ("png", lambda p: write(p, PNG), "png"),
    ("jpeg", lambda p: write(p, JPEG), "jpeg"),
    ("txt", lambda p: write(p, POLISH.encode()), "txt"),
    ("txt-bom", lambda p: write(p, b"\xef\xbb\xbf" + POLISH.encode()), "txt"),
    ("txt-mzk", lambda p: write(p, "MZK: rozkład jazdy linii 5\n".encode()), "txt"),
    ("exe", lambda p: write(p, pe_bytes()), "exe"),
    ("elf", lambda p: write(p, b"\x7fELF\x02\x01\x01" + bytes(64)), "elf"),
    ("gzip", lambda p: write(p, b"\x1f\x8b\x08\x00" + bytes(16)), "gzip"),
    ("cp1250", lambda p: write(p, POLISH.encode("cp1250")), None),
    ("utf16", lambda p: write(p, POLISH.encode("utf-16")), None),
    ("nul-in-text", lambda p: write(p, b"abc\x00def"), None),
    ("empty", lambda p: write(p, b""), None),
]


@pytest.mark.parametrize(
    ("label", "build", "expected"), SAMPLES, ids=[label for label, _, _ in SAMPLES]
)
def test_detect_type_by_content(
    tmp_path: Path, label: str, build: Builder, expected: str | None
) -> None:
    path = build(tmp_path / "sample.bin")  # the name says nothing
    found = detect_type(path)
    assert (found.name if found else None) == expected


def test_ole2_directory_is_followed_through_the_fat_and_the_difat(tmp_path: Path) -> None:
    streams = ["\x05SummaryInformation", "\x05DocumentSummaryInformation", "1Table", "Data"]
    # WordDocument lands in the second directory sector of the chain, the first one physically.
    for via_difat in (False, True):
        path = write(
            tmp_path / "a.doc", ole2_bytes([*streams, "WordDocument"], via_difat=via_difat)
        )
        found = detect_type(path)
        assert found is not None and found.name == "doc", via_difat


def test_utf8_text_across_chunk_boundaries_is_text(tmp_path: Path) -> None:
    line = POLISH.encode()
    data = b"a" + line * (3 * CHUNK // len(line))  # shifts 'ż' etc. over the chunk edges
    # some chunk edge falls inside a multi-byte character (a continuation byte starts a chunk)
    assert any(0x80 <= data[k * CHUNK] < 0xC0 for k in (1, 2))
    found = detect_type(write(tmp_path / "t.txt", data))
    assert found is not None and found.name == "txt"


def test_a_nul_late_in_a_long_text_is_caught(tmp_path: Path) -> None:
    data = POLISH.encode() * 4000 + b"\x00"
    assert detect_type(write(tmp_path / "t.txt", data)) is None


def test_every_allowed_type_is_known() -> None:
    assert set(TYPES) >= ALLOWED
    assert len(ALLOWED) == 13


# --- page count -----------------------------------------------------------------------------


@pytest.mark.parametrize("pages", [1, 3, 12])
def test_pdf_page_count(tmp_path: Path, pages: int) -> None:
    assert page_count(write(tmp_path / "a.pdf", pdf_bytes(pages)), TYPES["pdf"]) == pages


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n% not really a PDF\n",
        b"%PDF-",
        pdf_bytes(2)[:300],  # truncated: no cross-reference table, no trailer
    ],
)
def test_a_broken_pdf_has_no_page_count_and_raises_nothing(tmp_path: Path, data: bytes) -> None:
    assert page_count(write(tmp_path / "b.pdf", data), TYPES["pdf"]) is None


def test_docx_and_odt_page_counts_from_their_metadata(tmp_path: Path) -> None:
    assert page_count(write_docx(tmp_path / "a.docx", pages=4), TYPES["docx"]) == 4
    assert page_count(write_docx(tmp_path / "b.docx"), TYPES["docx"]) is None
    assert page_count(write_odf(tmp_path / "a.odt", "text", pages=7), TYPES["odt"]) == 7
    assert page_count(write_odf(tmp_path / "b.odt", "text"), TYPES["odt"]) is None


def test_other_types_and_a_damaged_zip_have_no_page_count(tmp_path: Path) -> None:
    assert page_count(write(tmp_path / "a.png", PNG), TYPES["png"]) is None
    assert page_count(write(tmp_path / "a.docx", b"PK\x03\x04broken"), TYPES["docx"]) is None
    assert page_count(write(tmp_path / "a.txt", b"x"), None) is None


def _bomb(path: Path, member: str, head: bytes, tail: bytes, size: int) -> None:
    """A ZIP whose ``member`` inflates to ``size`` bytes of spaces between head and tail."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        if member != "[Content_Types].xml":
            archive.writestr(
                "[Content_Types].xml",
                f'<Types><Override ContentType="{OOXML}.wordprocessingml.document.main+xml"/>'
                "</Types>",
            )
        with archive.open(member, "w") as out:
            out.write(head)
            block = b" " * (1 << 20)
            for _ in range(size // len(block)):
                out.write(block)
            out.write(tail)


def test_a_zip_bomb_member_is_read_only_up_to_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    _bomb(path, "docProps/app.xml", b"<Properties>", b"<Pages>9</Pages></Properties>", 64 << 20)
    assert path.stat().st_size < 1 << 20  # 64 MB inflated, well under 1 MB on disk
    tracemalloc.start()
    try:
        pages = page_count(path, TYPES["docx"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pages is None  # the count sits past the cap: not read, not guessed
    assert peak < 4 * ZIP_MEMBER_CAP


def test_a_zip_bomb_content_types_member_does_not_make_a_docx(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    main = f'<Override ContentType="{OOXML}.wordprocessingml.document.main+xml"/>'
    _bomb(path, "[Content_Types].xml", b"<Types>", main.encode() + b"</Types>", 16 << 20)
    tracemalloc.start()
    try:
        found = detect_type(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found is not None and found.name == "zip"
    assert peak < 4 * ZIP_MEMBER_CAP


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("uchwała nr 5.pdf", "uchwała nr 5.pdf"),
        ("C:\\Users\\Łukasz\\Pulpit\\uchwała nr 5.pdf", "uchwała nr 5.pdf"),
        ("../../etc/passwd", "passwd"),
        (unicodedata.normalize("NFD", "Żółć ŁĄKA.pdf"), "Żółć ŁĄKA.pdf"),
        ("umowa\u202efdp.exe", "umowafdp.exe"),  # right-to-left override dropped
        ("porządek\tobrad\r\n sesji.pdf", "porządek obrad sesji.pdf"),
        ("a\x00b\x1bc.pdf", "abc.pdf"),
        ('raport: "budżet"?.pdf', "raport_ _budżet__.pdf"),
        ("CON.txt", "_CON.txt"),
        ("  ..uchwała.pdf.. ", "uchwała.pdf"),
        ("uchwała .pdf", "uchwała.pdf"),
        ("", "dokument"),
        ("...", "dokument"),
        ("/", "dokument"),
        ("wersja 1.2 projektu", "wersja 1.2 projektu"),
    ],
)
def test_sanitize_filename(given: str, safe: str) -> None:
    assert sanitize_filename(given) == safe


@pytest.mark.parametrize(("stem", "limit"), [("ą" * 300, 120), ("😀" * 100, 60)])
def test_long_names_are_shortened_keeping_the_extension(stem: str, limit: int) -> None:
    safe = sanitize_filename(stem + ".pdf")
    assert safe.endswith(".pdf")
    assert len(safe) <= 120
    assert len(safe.encode()) <= 240
    assert len(safe) >= limit - 1  # shortened, not emptied
    assert set(safe[:-4]) == set(stem)


# --- the check ------------------------------------------------------------------------------


def test_check_document_accepts_a_pdf_with_hash_size_and_pages(tmp_path: Path) -> None:
    data = pdf_bytes(3)
    info = check_document(write(tmp_path / "upload.tmp", data), "Uchwała Nr XV-12-2026.pdf")
    assert info.filename == "Uchwała Nr XV-12-2026.pdf"
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert info.doc_type is TYPES["pdf"]
    assert info.media_type == "application/pdf"
    assert info.pages == 3


def test_streamed_hash_of_a_file_of_many_chunks_equals_hashlib(tmp_path: Path) -> None:
    data = (POLISH * 20000).encode()  # about 1.2 MB, many chunks, ends mid-chunk
    assert len(data) > 10 * CHUNK and len(data) % CHUNK
    info = check_document(write(tmp_path / "u", data), "protokół.txt")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert info.pages is None


@pytest.mark.parametrize(
    ("name", "build", "pages"),
    [
        ("Projekt uchwały.DOCX", lambda p: write_docx(p, pages=2), 2),
        ("Łączność.odt", lambda p: write_odf(p, "text", pages=5), 5),
        ("plan.ods", lambda p: write_odf(p, "spreadsheet"), None),
        ("stary.doc", lambda p: write(p, ole2_bytes(["WordDocument"])), None),
        ("budżet.xls", lambda p: write(p, ole2_bytes(["Workbook"])), None),
        ("mapa.jpg", lambda p: write(p, JPEG), None),
        ("mapa.jpeg", lambda p: write(p, JPEG), None),
        ("mapa.png", lambda p: write(p, PNG), None),
        ("pismo.rtf", lambda p: write(p, b"{\\rtf1 x}"), None),
    ],
)
def test_allowed_documents_pass(
    tmp_path: Path, name: str, build: Builder, pages: int | None
) -> None:
    info = check_document(build(tmp_path / "upload"), name)
    assert info.filename == name
    assert info.pages == pages


def test_a_zip_renamed_to_pdf_is_refused_with_what_it_really_is(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    write_zip(path, {"a.txt": b"x"})
    with pytest.raises(DocumentRejected) as caught:
        check_document(path, "uchwała.pdf")
    assert (
        caught.value.message
        == "Plik „uchwała.pdf” nie jest dokumentem PDF (zawartość: archiwum ZIP)."
    )
    assert caught.value.reason == "mismatch"
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PermanentFailure)


@pytest.mark.parametrize(
    ("name", "build", "message"),
    [
        (
            "uchwała.pdf",
            lambda p: write(p, pe_bytes()),
            "Plik „uchwała.pdf” nie jest dokumentem PDF (zawartość: program Windows).",
        ),
        (
            "projekt.docx",
            lambda p: write(p, pdf_bytes(1)),
            "Plik „projekt.docx” nie jest dokumentem Word DOCX (zawartość: dokument PDF).",
        ),
        (
            "projekt.docx",
            lambda p: write_ooxml(
                p, "application/vnd.ms-word.document.macroEnabled.main+xml", "word/document.xml"
            ),
            "Plik „projekt.docx” nie jest dokumentem Word DOCX "
            "(zawartość: dokument Office z makrami).",
        ),
        (
            "projekt.odt",
            write_docx,
            "Plik „projekt.odt” nie jest dokumentem tekstowym ODT (zawartość: dokument Word DOCX).",
        ),
        (
            "notatka.txt",
            lambda p: write(p, POLISH.encode("cp1250")),
            "Plik „notatka.txt” nie jest plikiem tekstowym UTF-8 (zawartość: nieznany format).",
        ),
        (
            "stary.doc",
            lambda p: write(p, ole2_bytes(["\u4840\u3b3f"])),
            "Plik „stary.doc” nie jest dokumentem Word DOC (zawartość: plik złożony Microsoft, "
            "np. instalator MSI lub zaszyfrowany dokument).",
        ),
    ],
)
def test_content_not_matching_the_extension_is_refused(
    tmp_path: Path, name: str, build: Builder, message: str
) -> None:
    with pytest.raises(DocumentRejected) as caught:
        check_document(build(tmp_path / "upload"), name)
    assert caught.value.reason == "mismatch"
    assert str(caught.value) == message


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DocumentRejected) as caught:
        check_document(write(tmp_path / "u", b""), "porządek obrad.pdf")
    assert caught.value.reason == "empty"
    assert str(caught.value) == "Plik „porządek obrad.pdf” jest pusty."


ALLOWED_LIST = "PDF, DOCX, ODT, DOC, RTF, TXT, XLSX, ODS, XLS, PPTX, ODP, PNG, JPEG"


def test_a_forbidden_extension_is_refused_even_for_a_real_program(tmp_path: Path) -> None:
    with pytest.raises(DocumentRejected) as caught:
        check_document(write(tmp_path / "u", pe_bytes()), "instalator.exe")
    assert caught.value.reason == "not-allowed"
    assert str(caught.value) == (
        "Plik „instalator.exe” ma niedozwolone rozszerzenie „.exe” (zawartość: program Windows). "
        f"Dozwolone typy: {ALLOWED_LIST}."
    )


def test_a_zip_named_zip_is_not_allowed(tmp_path: Path) -> None:
    path = tmp_path / "u"
    write_zip(path, {"a.pdf": pdf_bytes(1)})
    with pytest.raises(DocumentRejected) as caught:
        check_document(path, "materiały.zip")
    assert caught.value.reason == "not-allowed"
    assert "(zawartość: archiwum ZIP)" in str(caught.value)


def test_a_hidden_extension_behind_a_right_to_left_override_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DocumentRejected) as caught:
        check_document(write(tmp_path / "u", pe_bytes()), "uchwała\u202efdp.exe")
    assert caught.value.reason == "not-allowed"
    assert "„uchwałafdp.exe”" in str(caught.value)


def test_no_extension_suggests_the_right_name(tmp_path: Path) -> None:
    with pytest.raises(DocumentRejected) as caught:
        check_document(write(tmp_path / "u", pdf_bytes(1)), "uchwała")
    assert caught.value.reason == "no-extension"
    assert str(caught.value) == (
        "Plik „uchwała” nie ma rozszerzenia; zawartość to dokument PDF. Nazwij go „uchwała.pdf”."
    )


def test_no_extension_and_unknown_content(tmp_path: Path) -> None:
    with pytest.raises(DocumentRejected) as caught:
        check_document(write(tmp_path / "u", b"\x00\x01\x02binary"), "dane")
    assert caught.value.reason == "no-extension"
    assert str(caught.value) == (
        "Plik „dane” nie ma rozszerzenia, a jego zawartość (nieznany format) nie jest "
        f"dozwolona. Dozwolone typy: {ALLOWED_LIST}."
    )


def test_messages_in_english(tmp_path: Path) -> None:
    path = tmp_path / "u"
    write_zip(path, {"a.txt": b"x"})
    with pytest.raises(DocumentRejected) as caught:
        check_document(path, "uchwała.pdf", language="en")
    assert (
        str(caught.value)
        == "The file “uchwała.pdf” is not a PDF document (content: a ZIP archive)."
    )
    with pytest.raises(DocumentRejected) as caught:
        check_document(write(tmp_path / "e", b""), "Żółć.pdf", language="en")
    assert str(caught.value) == "The file “Żółć.pdf” is empty."


def test_a_cyclic_ole2_directory_chain_ends(tmp_path: Path) -> None:
    data = bytearray(ole2_bytes(["a", "b", "c", "WordDocument"]))  # directory: sector 2 → 1
    struct.pack_into("<I", data, 512 + 4 * 1, 2)  # FAT[1] = 2: back to the start, forever
    found = detect_type(write(tmp_path / "loop.doc", bytes(data)))
    assert found is not None and found.name == "doc"
