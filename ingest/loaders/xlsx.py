"""XLSX loader: each sheet is a page headed by its name; each row a record headed `row N`."""

from __future__ import annotations

import io
import warnings
from typing import Any

from ingest.loaders.archive import check_zip
from ingest.loaders.base import LoaderLimits, TextAssembler, clean_title, require_text
from ingest.loaders.records import add_record, cell_text, is_header, record_text
from kag.errors import CorruptDocumentError, EncryptedDocumentError
from kag.records import PageSpan, ParsedDocument


class XlsxLoader:
    """`.xlsx`: read with openpyxl in read-only mode (rows stream, the workbook is never built whole).

    Sheet k is page k, so a chunk's page and heading path (sheet name, `row N`) say where it came from;
    formulas give their cached values; a sheet's first row is its header when all its cells are text."""

    mime_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

    def __init__(self, *, limits: LoaderLimits | None = None) -> None:
        self.limits = limits or LoaderLimits()

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        if _is_encrypted(data):
            raise EncryptedDocumentError(
                f"{source}: is password-protected",
                hint="remove the password in Excel (File > Info > Protect Workbook) and ingest again",
                source=source,
            )
        check_zip(data, source, self.limits, kind=".xlsx")
        workbook = _open(data, source)
        out = TextAssembler(max_chars=self.limits.max_text_chars, source=source)
        pages: list[PageSpan] = []
        sheets: list[str] = []
        rows = 0
        try:
            for number, sheet in enumerate(workbook.worksheets, start=1):
                sheets.append(sheet.title)
                start = out.next_start()
                out.add(sheet.title, heading_level=1)
                rows += _add_rows(out, sheet, source)
                pages.append(PageSpan(number, start, out.length))
            title = clean_title(_core_title(workbook))
        finally:
            workbook.close()
        require_text(_body(out), source, what="no sheet has a cell with text")
        return ParsedDocument(
            text=out.text,
            mime_type=self.mime_type,
            title=title or (sheets[0] if len(sheets) == 1 else None),
            pages=tuple(pages),
            headings=tuple(out.headings),
            metadata={"sheets": sheets, "rows": rows},
        )


def _body(out: TextAssembler) -> str:
    """The text outside sheet-name headings (a workbook of empty sheets has only those)."""
    text, at, parts = out.text, 0, []
    for heading in out.headings:
        if heading.level == 1:
            parts.append(text[at : heading.start])
            at = heading.end
    parts.append(text[at:])
    return "".join(parts)


def _add_rows(out: TextAssembler, sheet: Any, source: str) -> int:
    """Add one sheet's rows as records; returns how many."""
    header: list[str] | None = None
    header_row = 0
    added = 0
    try:
        # the declared dimension may claim 16,384 columns: padding every row to it would turn a few
        # cells into billions of empty ones, so rows hold only the cells the file has
        sheet.reset_dimensions()
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            cells = [cell_text(v) for v in values]
            if not any(cells):
                continue
            if added == 0 and header is None and is_header(values):
                header, header_row = cells, number
                continue
            add_record(out, number, record_text(cells, header), level=2)
            added += 1
    except Exception as exc:  # openpyxl raises many types on broken sheet XML
        raise _corrupt(source, exc, f"sheet {sheet.title!r}") from exc
    if added == 0 and header is not None:
        add_record(out, header_row, " | ".join(c for c in header if c), level=2)
        added = 1
    return added


def _open(data: bytes, source: str) -> Any:
    import openpyxl

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no default style" and the like: harmless for text
            return openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise _corrupt(source, exc, "the workbook") from exc


def _is_encrypted(data: bytes) -> bool:
    # Office encrypts a workbook into an OLE compound file, not a zip
    return data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")


def _corrupt(source: str, exc: Exception, where: str) -> CorruptDocumentError:
    return CorruptDocumentError(
        f"{source}: cannot read {where} ({type(exc).__name__}: {exc})",
        hint="the file may be damaged, or be a legacy .xls renamed; re-save it from Excel as .xlsx",
        source=source,
    )


def _core_title(workbook: Any) -> str | None:
    try:
        return workbook.properties.title
    except Exception:
        return None
