"""DOCX loader: body paragraphs and table rows in document order; heading styles become headings."""

from __future__ import annotations

import io
import re
from typing import Any

from ingest.loaders.archive import check_zip
from ingest.loaders.base import (
    LoaderLimits,
    TextAssembler,
    clean_title,
    first_line_title,
    normalize_newlines,
    require_text,
)
from kag.errors import CorruptDocumentError
from kag.records import ParsedDocument

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)


class DocxLoader:
    """`.docx`: paragraphs joined by blank lines; "Title"/"Heading N" styles give HeadingSpans."""

    mime_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

    def __init__(self, *, limits: LoaderLimits | None = None) -> None:
        self.limits = limits or LoaderLimits()

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        # python-docx inflates every part into memory: check what they would inflate to first
        check_zip(data, source, self.limits, kind=".docx")
        document = _open(data, source)
        out = TextAssembler(max_chars=self.limits.max_text_chars, source=source)
        styled_title: str | None = None
        for item in document.iter_inner_content():
            if hasattr(item, "rows"):
                for row in _table_rows(item):
                    out.add(row)
                continue
            text = _clean(item.text)
            level = _heading_level(item)
            if level == 0:
                styled_title = styled_title or text
                level = 1
            out.add(text, heading_level=level)
        text = out.text
        require_text(text, source, what="the document has no text")
        title = clean_title(_core_title(document)) or clean_title(styled_title)
        if title is None and out.headings:
            title = clean_title(out.headings[0].title)
        return ParsedDocument(
            text=text,
            mime_type=self.mime_type,
            title=title or first_line_title(text),
            headings=tuple(out.headings),
        )


def _open(data: bytes, source: str) -> Any:
    import docx

    try:
        return docx.Document(io.BytesIO(data))
    except Exception as exc:  # bad zips, missing parts and wrong content types alike
        raise CorruptDocumentError(
            f"{source}: not a readable .docx file ({type(exc).__name__}: {exc})",
            hint="the file may be damaged, or be a legacy .doc renamed to .docx; re-save it from Word as .docx",
            source=source,
        ) from exc


def _clean(text: str) -> str:
    # vertical tabs are Word's manual line breaks in some producers; NULs are never text
    return normalize_newlines(text).replace("\x0b", "\n").replace("\x00", "")


def _heading_level(paragraph: Any) -> int | None:
    """0 for the Title style, N for "Heading N", None for body text."""
    try:
        name = (paragraph.style.name or "") if paragraph.style is not None else ""
    except Exception:
        return None
    if name.lower() == "title":
        return 0
    match = _HEADING_STYLE.match(name.strip())
    return int(match.group(1)) if match else None


def _table_rows(table: Any) -> list[str]:
    """One line per row, distinct cells joined by " | " (merged cells repeat in python-docx)."""
    rows = []
    for row in table.rows:
        cells: list[str] = []
        # hold the elements themselves: lxml proxies are recreated, so their ids are not stable
        seen: list[Any] = []
        for cell in row.cells:
            if any(cell._tc is tc for tc in seen):
                continue
            seen.append(cell._tc)
            cells.append(" ".join(_clean(cell.text).split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _core_title(document: Any) -> str | None:
    try:
        return document.core_properties.title
    except Exception:
        return None
