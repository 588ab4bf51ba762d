"""PDF loader: pypdf text per page, pages joined by a blank line, one PageSpan each."""

from __future__ import annotations

import io
from typing import Any

from ingest.loaders.base import clean_title, first_line_title, normalize_newlines
from ingest.loaders.ocr import OCR_MODES, TesseractOcr
from kag.errors import CorruptDocumentError, EmptyDocumentError, EncryptedDocumentError
from kag.records import PageSpan, ParsedDocument

PAGE_SEPARATOR = "\n\n"


class PdfLoader:
    """`.pdf`: the text layer of each page; with `ocr="auto"` a page without one is OCRed by tesseract."""

    mime_type = "application/pdf"

    def __init__(self, *, ocr: str = "off", tesseract_cmd: str = "tesseract", ocr_language: str = "eng") -> None:
        if ocr not in OCR_MODES:
            raise ValueError(f"ocr must be one of {', '.join(OCR_MODES)}, got {ocr!r}")
        self.ocr = TesseractOcr(tesseract_cmd, language=ocr_language) if ocr == "auto" else None

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        reader = _open(data, source)
        parts: list[str] = []
        pages: list[PageSpan] = []
        ocr_pages: list[int] = []
        offset = 0
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
        return ParsedDocument(
            text=text,
            mime_type=self.mime_type,
            title=_metadata_title(reader) or first_line_title(text),
            pages=tuple(pages),
            metadata=metadata,
        )


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
