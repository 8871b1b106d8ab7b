"""A small PDF toolkit over fpdf2 for the council's A4 reports (the receipts report and the
paper print list): DejaVu fonts for Polish diacritics, a running head, "Strona 1 z 3" footers,
text that fits its box, and a fast bordered table whose header repeats on every page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from fpdf import FPDF

from mailsvc.domain.vocabulary import pick
from mailsvc.receipts.report.facts import ReportError, one_line

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = {  # (family, style) -> file in fonts-dejavu-core
    ("DejaVu", ""): "DejaVuSans.ttf",
    ("DejaVu", "B"): "DejaVuSans-Bold.ttf",
    ("DejaVuMono", ""): "DejaVuSansMono.ttf",
}
RGB = tuple[int, int, int]


def new_pdf(
    *,
    orientation: Literal["P", "L"],
    running_head: str,
    footer_note: str,
    language: str,
    created_at: datetime | None,
    title: str,
    font_dir: Path = FONT_DIR,
    compliance: str | None = None,
) -> ReportPdf:
    """An A4 report with DejaVu fonts (Polish diacritics), running head and page numbers.
    ``compliance``: an fpdf2 document compliance such as "PDFA_3B" (archival PDF)."""
    pdf = ReportPdf(
        orientation=orientation,
        running_head=running_head,
        footer_note=footer_note,
        language=language,
        font_dir=font_dir,
        compliance=compliance,
    )
    if created_at is not None:  # a fixed date makes repeated runs give the same bytes
        stamp = created_at if created_at.tzinfo is not None else created_at.replace(tzinfo=UTC)
        pdf.set_creation_date(stamp)
    pdf.set_title(title)
    pdf.set_creator("mailsvc")
    pdf.set_lang(language)
    pdf.add_page()
    return pdf


class ReportPdf(FPDF):
    """A4 pages with a small running head, "Strona 1 z 3" in the footer and DejaVu fonts."""

    def __init__(
        self,
        *,
        orientation: Literal["P", "L"],
        running_head: str,
        footer_note: str,
        language: str,
        font_dir: Path,
        compliance: str | None = None,
    ) -> None:
        super().__init__(
            orientation=orientation, unit="mm", format="A4", enforce_compliance=compliance
        )
        for (family, style), file_name in FONT_FILES.items():
            path = font_dir / file_name
            if not path.is_file():
                raise ReportError(
                    f"Font {path} is missing: install the Debian package fonts-dejavu-core "
                    "(apt-get install fonts-dejavu-core)."
                )
            self.add_font(family, style, path)
        self.running_head = running_head
        self.footer_note = footer_note
        self.language = language
        self.set_margins(10, 14, 10)
        self.set_auto_page_break(auto=True, margin=14)
        self.set_draw_color(120, 120, 120)
        self.set_line_width(0.15)

    def header(self) -> None:
        self.set_font("DejaVu", "", 7)
        self.set_text_color(90, 90, 90)
        self.text(self.l_margin, 9, fit_text(self, self.running_head, self.epw))
        self.set_text_color(0, 0, 0)
        self.set_y(self.t_margin)

    def footer(self) -> None:
        self.set_y(-11)
        self.set_font("DejaVu", "", 7)
        self.set_text_color(90, 90, 90)
        self.cell(self.epw / 2, 5, self.footer_note, align="L")
        page = pick(
            {"pl": "Strona {page} z {total}", "en": "Page {page} of {total}"}, self.language
        )
        self.cell(self.epw / 2, 5, page.format(page=self.page_no(), total="{nb}"), align="R")
        self.set_text_color(0, 0, 0)

    def heading(self, text: str, *, size: float = 10, room: float = 25) -> None:
        """A bold section heading, moved to a new page when less than ``room`` mm is left."""
        if self.get_y() + room > self.page_break_trigger:
            self.add_page()
        self.ln(2)
        self.set_font("DejaVu", "B", size)
        self.multi_cell(self.epw, size * 0.5, printable(self, text), new_x="LMARGIN", new_y="NEXT")
        self.ln(1)

    def paragraph(self, text: str, *, size: float = 8, bold: bool = False) -> None:
        self.set_font("DejaVu", "B" if bold else "", size)
        self.multi_cell(self.epw, size * 0.5, printable(self, text), new_x="LMARGIN", new_y="NEXT")


def printable(pdf: FPDF, text: str) -> str:
    """``text`` on one line, characters the current font lacks shown as "?" (never dropped)."""
    text = one_line(text)
    font = pdf.current_font
    cmap = getattr(font, "cmap", None)
    if cmap is None or all(ord(ch) in cmap for ch in text):
        return text
    return "".join(ch if ord(ch) in cmap else "?" for ch in text)


def fit_text(pdf: FPDF, text: str, width: float) -> str:
    """``text`` cut with "…" so that it fits ``width`` mm in the current font."""
    text = printable(pdf, text)
    if pdf.get_string_width(text) <= width:
        return text
    low, high = 0, len(text)  # longest prefix that fits together with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if pdf.get_string_width(text[:middle].rstrip() + "…") <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + "…"


def wrap_text(pdf: FPDF, text: str, width: float, max_lines: int) -> list[str]:
    """``text`` broken into at most ``max_lines`` lines of ``width`` mm; the last one is cut
    with "…" when the text does not fit. "\n" starts a new line; words longer than a line
    are split."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines.extend(_wrap_paragraph(pdf, printable(pdf, paragraph), width))
    if len(lines) > max_lines:
        rest = " ".join(lines[max_lines - 1 :])
        lines = [*lines[: max_lines - 1], fit_text(pdf, rest, width)]
    return lines


def _wrap_paragraph(pdf: FPDF, text: str, width: float) -> list[str]:
    if pdf.get_string_width(text) <= width:
        return [text]
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if pdf.get_string_width(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while pdf.get_string_width(current) > width and len(current) > 1:
            cut = _longest_fitting_prefix(pdf, current, width)
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    return lines


def _longest_fitting_prefix(pdf: FPDF, text: str, width: float) -> int:
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if pdf.get_string_width(text[:middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class Column:
    """One column of a :class:`PdfTable`; ``width`` in mm."""

    title: str
    width: float
    align: Literal["L", "C", "R"] = "L"
    mono: bool = False
    bold: bool = False
    max_lines: int = 2


class PdfTable:
    """A bordered table drawn row by row, its header repeated at the top of every page.

    Drawn with ``rect`` and ``text`` rather than fpdf2's ``table()``: a thousand councillors with
    several distributions each must render in about a second.
    """

    HEADER_FILL: RGB = (225, 225, 225)

    def __init__(
        self, pdf: FPDF, columns: Sequence[Column], *, font_size: float = 7.0, padding: float = 0.8
    ) -> None:
        self.pdf = pdf
        self.columns = tuple(columns)
        self.font_size = font_size
        self.padding = padding
        self.line_height = font_size * 0.3528 * 1.25  # pt -> mm, with leading

    def start(self) -> None:
        """Draw the header row (on a new page if not even the header and one row fit)."""
        needed = 2 * (self.line_height * 2 + 2 * self.padding)
        if self.pdf.get_y() + needed > self.pdf.page_break_trigger:
            self.pdf.add_page()
        self._draw_header()

    def row(
        self,
        values: Sequence[str],
        *,
        fills: Mapping[int, RGB] | None = None,
        on_new_page: Sequence[str] | None = None,
        min_height: float = 0.0,
    ) -> None:
        """Draw one row; ``on_new_page`` replaces ``values`` when the row starts a new page
        (a councillor's name left blank under its first row is shown again there)."""
        wrapped = self._wrap(values)
        height = self._height(wrapped, min_height)
        if self.pdf.get_y() + height > self.pdf.page_break_trigger:
            self.pdf.add_page()
            self._draw_header()
            if on_new_page is not None:
                wrapped = self._wrap(on_new_page)
                height = self._height(wrapped, min_height)
        self._draw(wrapped, height, fills or {}, header=False)

    def _wrap(self, values: Sequence[str]) -> list[list[str]]:
        pdf = self.pdf
        result = []
        for column, value in zip(self.columns, values, strict=True):
            self._use_font(column, header=False)
            inner = column.width - 2 * self.padding
            result.append(wrap_text(pdf, value, inner, column.max_lines))
        return result

    def _height(self, wrapped: Sequence[Sequence[str]], min_height: float) -> float:
        lines = max((len(cell) for cell in wrapped), default=1)
        return max(lines * self.line_height + 2 * self.padding, min_height)

    def _draw_header(self) -> None:
        wrapped = []
        for column in self.columns:
            self._use_font(column, header=True)
            wrapped.append(wrap_text(self.pdf, column.title, column.width - 2 * self.padding, 3))
        fills = dict.fromkeys(range(len(self.columns)), self.HEADER_FILL)
        self._draw(wrapped, self._height(wrapped, 0.0), fills, header=True)

    def _use_font(self, column: Column, *, header: bool) -> None:
        if header:
            self.pdf.set_font("DejaVu", "B", self.font_size)
        elif column.mono:
            self.pdf.set_font("DejaVuMono", "", self.font_size)
        else:
            self.pdf.set_font("DejaVu", "B" if column.bold else "", self.font_size)

    def _draw(
        self,
        wrapped: Sequence[Sequence[str]],
        height: float,
        fills: Mapping[int, RGB],
        *,
        header: bool,
    ) -> None:
        pdf = self.pdf
        x = pdf.l_margin
        y = pdf.get_y()
        ascent = self.font_size * 0.3528 * 0.95
        for index, (column, lines) in enumerate(zip(self.columns, wrapped, strict=True)):
            fill = fills.get(index)
            if fill is not None:
                pdf.set_fill_color(*fill)
                pdf.rect(x, y, column.width, height, style="DF")
            else:
                pdf.rect(x, y, column.width, height)
            self._use_font(column, header=header)
            for number, line in enumerate(lines):
                if not line:
                    continue
                baseline = y + self.padding + number * self.line_height + ascent
                if column.align == "L" or header:
                    left = x + self.padding
                else:
                    free = column.width - 2 * self.padding - pdf.get_string_width(line)
                    left = x + self.padding + (free if column.align == "R" else free / 2)
                pdf.text(left, baseline, line)
            x += column.width
        pdf.set_xy(pdf.l_margin, y + height)
