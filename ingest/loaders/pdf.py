"""PDF loader: pypdf text per page, pages joined by a blank line, one PageSpan each.

Running headers and footers (a line such as "Acme - Confidential - Page 2 of 4" at the top or
bottom of most pages) are left out of the document text, so that no chunk, quote or offset
contains them and the page spans describe the text that is kept."""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from typing import Any

from ingest.loaders.base import clean_title, first_line_title, normalize_newlines
from ingest.loaders.ocr import OCR_MODES, TesseractOcr
from kag.errors import CorruptDocumentError, EmptyDocumentError, EncryptedDocumentError
from kag.records import PageSpan, ParsedDocument

PAGE_SEPARATOR = "\n\n"
#: lines from each end of a page that may be a running header or footer
EDGE_LINES = 2
#: a line is a running header/footer when it (up to its numbers) is at an edge of this share of pages
RUNNING_SHARE = 0.5
_DIGITS = re.compile(r"\d+")


class PdfLoader:
    """`.pdf`: the text layer of each page; with `ocr="auto"` a page without one is OCRed by tesseract."""

    mime_type = "application/pdf"

    def __init__(self, *, ocr: str = "off", tesseract_cmd: str = "tesseract", ocr_language: str = "eng") -> None:
        if ocr not in OCR_MODES:
            raise ValueError(f"ocr must be one of {', '.join(OCR_MODES)}, got {ocr!r}")
        self.ocr = TesseractOcr(tesseract_cmd, language=ocr_language) if ocr == "auto" else None

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        reader = _open(data, source)
        texts: list[str] = []
        ocr_pages: list[int] = []
        for number, page in enumerate(_pages(reader, source), start=1):
            try:
                raw = page.extract_text() or ""
            except Exception as exc:  # pypdf raises many types on broken content streams
                raise CorruptDocumentError(
                    f"{source}: cannot extract the text of page {number}: {exc}",
                    hint="repair or re-export the PDF (e.g. print it to a new PDF)",
                    source=source,
                ) from exc
            # NULs show up in some font encodings and are never text
            text = normalize_newlines(raw).replace("\x00", "").strip()
            if not text and self.ocr is not None:
                text = self.ocr.page_text(page, number=number, source=source)
                if text:
                    ocr_pages.append(number)
            texts.append(text)
        # before the text and its page spans are built, so that every offset describes the kept text
        texts, removed = strip_running_lines(texts)
        parts: list[str] = []
        pages: list[PageSpan] = []
        offset = 0
        for number, text in enumerate(texts, start=1):
            if parts:
                parts.append(PAGE_SEPARATOR)
                offset += len(PAGE_SEPARATOR)
            parts.append(text)
            pages.append(PageSpan(number, offset, offset + len(text)))
            offset += len(text)
        text = "".join(parts)
        if not text.strip():
            if self.ocr is not None:
                raise EmptyDocumentError(
                    f"{source}: none of its {len(pages)} page(s) has extractable text, and OCR found none in "
                    "their images",
                    hint="check the scan's quality, or KAG_OCR_LANGUAGE if it is not in English",
                    source=source,
                )
            raise EmptyDocumentError(
                f"{source}: none of its {len(pages)} page(s) has extractable text; it may be scanned images",
                hint="set KAG_OCR=auto to OCR such pages with tesseract, or run OCR on it first "
                "(e.g. `ocrmypdf in.pdf out.pdf`) and ingest the result",
                source=source,
            )
        metadata: dict[str, Any] = {"page_count": len(pages)}
        if ocr_pages:
            metadata["ocr_pages"] = ocr_pages
        if removed:
            metadata["running_lines_removed"] = removed
        return ParsedDocument(
            text=text,
            mime_type=self.mime_type,
            title=_metadata_title(reader) or first_line_title(text),
            pages=tuple(pages),
            metadata=metadata,
        )


def strip_running_lines(pages: list[str]) -> tuple[list[str], int]:
    """The pages without their running headers and footers, and how many lines were removed.

    A running line is one of the first or last EDGE_LINES non-blank lines of a page whose shape (the
    line with every number as `#`, so "Page 2 of 4" matches "Page 3 of 4") sits at an edge of at least
    RUNNING_SHARE of the pages, and of two pages at least. Only lines at the edges go, never one in
    the body, and a page that would be left empty keeps its text."""
    if len(pages) < 2:
        return pages, 0
    lines = [page.split("\n") for page in pages]
    seen: Counter[str] = Counter()
    for page_lines in lines:
        seen.update({_shape(line) for line in _edges(page_lines)})
    need = max(2, math.ceil(RUNNING_SHARE * len(pages)))
    running = {shape for shape, count in seen.items() if shape and count >= need}
    if not running:
        return pages, 0
    kept, removed = [], 0
    for page, page_lines in zip(pages, lines, strict=True):
        body = _without_running(page_lines, running)
        text = "\n".join(body).strip()
        if text:
            removed += len([line for line in page_lines if line.strip()]) - len([line for line in body if line.strip()])
            kept.append(text)
        else:
            kept.append(page)
    return kept, removed


def _shape(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()).lower())


def _edges(lines: list[str]) -> list[str]:
    nonblank = [line for line in lines if line.strip()]
    return nonblank[:EDGE_LINES] + nonblank[-EDGE_LINES:]


def _without_running(lines: list[str], running: set[str]) -> list[str]:
    """`lines` without running lines among the first and last EDGE_LINES non-blank ones."""
    start, end = 0, len(lines)
    for step in (1, -1):
        taken = 0
        while start < end and taken < EDGE_LINES:
            line = lines[start] if step == 1 else lines[end - 1]
            if line.strip():
                if _shape(line) not in running:
                    break
                taken += 1
            if step == 1:
                start += 1
            else:
                end -= 1
    return lines[start:end]


def _open(data: bytes, source: str) -> Any:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(data))
    except Exception as exc:  # pypdf signals broken files with many exception types
        raise _corrupt(source, exc) from exc
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except DependencyError as exc:
            raise EncryptedDocumentError(
                f"{source}: is encrypted with AES and decrypting it needs the `cryptography` package",
                hint="pip install cryptography",
                source=source,
            ) from exc
        except Exception as exc:
            raise _corrupt(source, exc) from exc
        if not opened:
            raise EncryptedDocumentError(
                f"{source}: is password-protected",
                hint="remove the password (e.g. `qpdf --decrypt --password=... in.pdf out.pdf`) and ingest again",
                source=source,
            )
    return reader


def _pages(reader: Any, source: str) -> list[Any]:
    try:
        return list(reader.pages)
    except Exception as exc:
        raise _corrupt(source, exc) from exc


def _corrupt(source: str, exc: Exception) -> CorruptDocumentError:
    return CorruptDocumentError(
        f"{source}: not a readable PDF ({type(exc).__name__}: {exc})",
        hint="the file may be truncated or damaged; download or export it again",
        source=source,
    )


def _metadata_title(reader: Any) -> str | None:
    try:
        metadata = reader.metadata
        return clean_title(metadata.title) if metadata is not None else None
    except Exception:
        return None
