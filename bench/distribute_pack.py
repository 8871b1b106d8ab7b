"""The document pack of the distribution benchmark: real, many-page PDFs that do not compress.

Each page carries a line of text and its own image of random pixels (fpdf2 stores images
Flate-compressed, and random pixels do not shrink), so the pack's size is what the mail system
really has to move: base64 makes it 4/3 larger on the wire, and no layer can cheat by
compressing it. Every page's image differs, so fpdf2 cannot share one image between pages.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF
from PIL import Image

# File names as a clerk saves them (diacritics on purpose: they go out RFC 2231-encoded).
NAMES = (
    "projekt-uchwały-budżetowej-2027.pdf",
    "załącznik-nr-1-plan-zagospodarowania-przestrzennego.pdf",
    "opinia-regionalnej-izby-obrachunkowej.pdf",
    "sprawozdanie-z-wykonania-budżetu-dzielnic.pdf",
    "uzasadnienie-i-mapy-dzielnic.pdf",
    "stanowiska-rad-dzielnic.pdf",
)
# Image bytes per page: about 80 KB, so a 5 MB document has some 60 pages.
PAGE_IMAGE_BYTES = 80_000
# Bytes a page costs besides its image (page object, content stream, image dictionary).
PAGE_OVERHEAD = 700


@dataclass(frozen=True)
class PackFile:
    """One generated document: where it is, its name, size, pages and SHA-256 (hex)."""

    path: Path
    filename: str
    size: int
    pages: int
    sha256: str


def _document(path: Path, title: str, target: int, rng: random.Random) -> int:
    """Write one PDF of about ``target`` bytes; returns its page count."""
    pages = max(1, round(target / (PAGE_IMAGE_BYTES + PAGE_OVERHEAD)))
    per_page = max(300, target // pages - PAGE_OVERHEAD)
    side = max(10, int(math.sqrt(per_page / 3)))
    height = max(10, per_page // (3 * side))
    pdf = FPDF()
    pdf.set_title(title)
    for page in range(pages):
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        # The core fonts have no Polish letters; the text is only there to make pages real.
        pdf.cell(text=f"{title} - page {page + 1} of {pages}")
        noise = Image.frombytes("RGB", (side, height), rng.randbytes(side * height * 3))
        pdf.image(noise, x=20, y=30, w=170)
    pdf.output(str(path))
    return pages


def make_pack(
    directory: Path, total_bytes: int, count: int = 4, seed: int = 2026
) -> list[PackFile]:
    """``count`` PDFs of about ``total_bytes`` together (within a few per cent) in ``directory``."""
    if not 1 <= count <= len(NAMES):
        raise ValueError(f"count must be 1 to {len(NAMES)}")
    rng = random.Random(seed)
    out = []
    for i in range(count):
        name = NAMES[i]
        path = directory / name
        title = f"Dokument {i + 1} z {count} (materialy na sesje)"
        pages = _document(path, title, total_bytes // count, rng)
        data = path.read_bytes()
        out.append(PackFile(path, name, len(data), pages, hashlib.sha256(data).hexdigest()))
    return out
