"""Delivery reports as PDF (fpdf2): an A4 page per screenful, in Dutch or English.

Contract:
- ``link_pdf(report, lang, public_url)`` and ``file_pdf(...)`` return the
  bytes of a landscape A4 PDF: a title, the installation's public URL, when
  the report was generated (it shows the state at that moment), the facts
  of the link or file, counts, and a table with every event (audit record
  number, UTC time, what, who, client address, path, bytes, whole file or
  not, program, details). Headings repeat on every page; the footer numbers
  the pages.
- Texts come from ``report_text`` (the web pages' catalogue). The text is
  real text, not pictures: it can be searched, copied and read back (the
  tests do so with pypdf).
- Font: DejaVu Sans when the system has it (Debian: fonts-dejavu-core),
  which covers names in any European script; otherwise the PDF core font
  Helvetica, in which characters outside Latin-1 are shown as "?".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

import davbox
from davbox.admin_ui import report_text
from davbox.admin_ui.i18n import gettext
from davbox.reports import FileReport, LinkReport, ReportEvent

FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/local/share/fonts/dejavu"),
)
# Column widths in mm; together the 277 mm between the margins of landscape A4.
WIDTHS = (10, 33, 30, 24, 24, 44, 16, 12, 48, 36)


def translator(lang: str) -> Callable[[str], str]:
    """``_`` for one language (message ids are extracted from ``_("...")`` calls)."""
    return functools.partial(gettext, lang)


def _font_files() -> tuple[Path, Path] | None:
    for folder in FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


class _ReportPdf(FPDF):
    def __init__(self, lang: str, title: str) -> None:
        super().__init__(orientation="landscape", unit="mm", format="A4")
        self.lang = lang
        self.report_title = title
        fonts = _font_files()
        if fonts is not None:
            self.add_font("report", "", str(fonts[0]))
            self.add_font("report", "B", str(fonts[1]))
            self.family, self.unicode_ok = "report", True
        else:
            self.family, self.unicode_ok = "helvetica", False
        self.set_margins(10, 12, 10)
        self.set_auto_page_break(True, margin=14)
        self.set_title(title)
        self.set_creator(f"davbox {davbox.__version__}")
        self.set_lang(lang)

    def text_of(self, text: str) -> str:
        if self.unicode_ok:
            return text
        return text.encode("latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        _ = translator(self.lang)
        self.set_y(-10)
        self.set_font(self.family, "", 7)
        page = _("Page {page} of {pages}").format(page=self.page_no(), pages="{nb}")
        self.cell(0, 5, self.text_of(f"{self.report_title} · davbox · {page}"), align="C")


def _start(lang: str, title: str, public_url: str, generated: str) -> _ReportPdf:
    _ = translator(lang)
    pdf = _ReportPdf(lang, title)
    pdf.add_page()
    pdf.set_font(pdf.family, "B", 16)
    pdf.multi_cell(0, 8, pdf.text_of(title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    _facts(
        pdf,
        [
            (_("Installation"), public_url),
            (_("Generated"), generated),
        ],
    )
    pdf.set_font(pdf.family, "", 8)
    pdf.multi_cell(
        0,
        4,
        pdf.text_of(
            _(
                "This report shows the state at the moment it was generated. Its events come"
                " from the tamper-evident audit trail; the numbers in the first column are"
                " the records' numbers there.",
            )
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(2)
    return pdf


def _facts(pdf: _ReportPdf, facts: Sequence[tuple[str, str]]) -> None:
    for label, value in facts:
        pdf.set_font(pdf.family, "B", 10)
        pdf.cell(45, 6, pdf.text_of(label))
        pdf.set_font(pdf.family, "", 10)
        pdf.multi_cell(0, 6, pdf.text_of(value), new_x="LMARGIN", new_y="NEXT")


def _heading(pdf: _ReportPdf, text: str) -> None:
    pdf.ln(3)
    pdf.set_font(pdf.family, "B", 12)
    pdf.cell(0, 7, pdf.text_of(text), new_x="LMARGIN", new_y="NEXT")


def _table(pdf: _ReportPdf, events: Sequence[ReportEvent]) -> None:
    lang = pdf.lang
    _ = translator(lang)
    if not events:
        pdf.set_font(pdf.family, "", 10)
        pdf.cell(0, 6, pdf.text_of(_("Nothing has happened yet.")))
        return
    pdf.set_font(pdf.family, "", 7)
    with pdf.table(
        col_widths=WIDTHS,
        width=sum(WIDTHS),
        text_align="LEFT",
        line_height=3.6,
        headings_style=FontFace(emphasis="BOLD", fill_color=(226, 232, 240)),
        padding=0.8,
        repeat_headings=1,
    ) as table:
        heading = table.row()
        for column in report_text.COLUMNS:
            heading.cell(pdf.text_of(gettext(lang, column)))
        for event in events:
            row = table.row()
            for cell in report_text.event_cells(event, lang):
                row.cell(pdf.text_of(cell))


def _counts(lang: str, placements: int, fetches: Sequence[ReportEvent]) -> list[tuple[str, str]]:
    _ = translator(lang)
    sent = sum(e.size or 0 for e in fetches)
    return [
        (_("Files placed"), str(placements)),
        (_("Files fetched"), str(len(fetches))),
        (_("Bytes sent"), str(sent)),
    ]


def link_pdf(report: LinkReport, lang: str, public_url: str) -> bytes:
    """The delivery report of a share link."""
    _ = translator(lang)
    title = _("Delivery report of link {id}").format(id=report.link.id)
    pdf = _start(lang, title, public_url, report_text.when(report.generated_at))
    _heading(pdf, _("The link"))
    _facts(pdf, report_text.link_facts(report.link, report.state, lang))
    _heading(pdf, _("Summary"))
    _facts(pdf, _counts(lang, len(report.placements), report.fetches))
    _heading(pdf, _("Events"))
    _table(pdf, report.events)
    return bytes(pdf.output())


def file_pdf(report: FileReport, lang: str, public_url: str) -> bytes:
    """The delivery report of one file."""
    _ = translator(lang)
    title = _("Delivery report of a file")
    pdf = _start(lang, title, public_url, report_text.when(report.generated_at))
    _heading(pdf, _("The file"))
    _facts(
        pdf,
        [
            (_("Mailbox"), report.mailbox),
            (_("Path"), report.path),
        ],
    )
    _heading(pdf, _("Summary"))
    _facts(pdf, _counts(lang, len(report.placements), report.fetches))
    _heading(pdf, _("Events"))
    _table(pdf, report.events)
    return bytes(pdf.output())
