"""OCR of a PDF page's images with tesseract (through pytesseract), for pages without a text layer."""

from __future__ import annotations

import shutil
import threading
from typing import Any

from ingest.loaders.base import normalize_newlines
from kag.errors import CorruptDocumentError, OcrUnavailableError

OCR_MODES = ("off", "auto")
INSTALL_HINT = (
    "install tesseract (`apt-get install tesseract-ocr`, `brew install tesseract`; `make install` does it as "
    "root where apt-get exists), point KAG_TESSERACT_CMD at it, or set KAG_OCR=off"
)
# pytesseract reads the program's path from a module global: set it and call under one lock
_LOCK = threading.Lock()


class TesseractOcr:
    """Runs the `tesseract` program on the images a page draws; a scanned page is one such image."""

    def __init__(self, command: str = "tesseract", *, language: str = "eng") -> None:
        self.command = command
        self.language = language

    def page_text(self, page: Any, *, number: int, source: str) -> str:
        """The text OCR finds in page `number`'s images ("" when it draws none)."""
        try:
            images = [image.image for image in page.images]
        except Exception as exc:  # pypdf raises many types on broken image streams
            raise CorruptDocumentError(
                f"{source}: cannot read the images of page {number} for OCR ({type(exc).__name__}: {exc})",
                hint="repair or re-export the PDF",
                source=source,
            ) from exc
        images = [image for image in images if image is not None]
        if not images:
            return ""
        pytesseract = self._pytesseract(source, number)
        texts = []
        for image in images:
            try:
                with _LOCK:
                    pytesseract.pytesseract.tesseract_cmd = self.command
                    texts.append(pytesseract.image_to_string(image, lang=self.language))
            except pytesseract.TesseractNotFoundError as exc:
                raise self._unavailable(source, number) from exc
            except pytesseract.TesseractError as exc:
                raise OcrUnavailableError(
                    f"{source}: tesseract failed on page {number}: {exc.message or exc}",
                    hint="check KAG_OCR_LANGUAGE names installed language data (`tesseract --list-langs`)",
                    source=source,
                    page=number,
                ) from exc
        text = normalize_newlines("\n".join(texts)).replace("\x0c", "").replace("\x00", "")
        return "\n".join(line.rstrip() for line in text.strip().split("\n"))

    def _pytesseract(self, source: str, number: int) -> Any:
        if shutil.which(self.command) is None:
            raise self._unavailable(source, number)
        try:
            import pytesseract
        except ImportError as exc:
            raise OcrUnavailableError(
                f"{source}: page {number} has no text layer and OCR needs the pytesseract package",
                hint="pip install pytesseract, or set KAG_OCR=off",
                source=source,
                page=number,
            ) from exc
        return pytesseract

    def _unavailable(self, source: str, number: int) -> OcrUnavailableError:
        return OcrUnavailableError(
            f"{source}: page {number} has no text layer and OCR (KAG_OCR=auto) needs the tesseract program, "
            f"which was not found (KAG_TESSERACT_CMD={self.command})",
            hint=INSTALL_HINT,
            source=source,
            page=number,
        )
