"""OCR of scanned PDF pages (KAG_OCR=auto) with the real tesseract, and the error where it is missing."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from ingest.loaders import default_registry
from ingest.loaders.pdf import PdfLoader
from kag.errors import EmptyDocumentError, OcrUnavailableError

ROOT = Path(__file__).resolve().parents[2]
needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="the tesseract program is not installed (`make install` adds it as root)"
)


def scanned_pdf(lines: list[str]) -> bytes:
    """An image-only PDF: text rendered into a bitmap by Pillow, saved as a PDF page (no text layer)."""
    image = Image.new("L", (1200, 200 + 90 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=56)
    for i, line in enumerate(lines):
        draw.text((60, 80 + 90 * i), line, fill=0, font=font)
    out = io.BytesIO()
    image.save(out, "PDF", resolution=150)
    return out.getvalue()


def mixed_pdf() -> bytes:
    """Page 1 has a text layer, page 2 is a scan."""
    scan = Image.open(io.BytesIO(_png(["Scanned second page"])))
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, "Typed first page.")
    pdf.add_page()
    pdf.image(scan, x=10, y=10, w=190)
    return bytes(pdf.output())


def _png(lines: list[str]) -> bytes:
    image = Image.new("L", (1200, 300), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=56)
    for i, line in enumerate(lines):
        draw.text((60, 80 + 90 * i), line, fill=0, font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_ocr_is_off_by_default_and_the_error_names_the_setting() -> None:
    data = scanned_pdf(["Invoice number 4711"])
    with pytest.raises(EmptyDocumentError, match="scanned") as info:
        default_registry().for_path("scan.pdf").load(data, source="scan.pdf")
    assert "KAG_OCR=auto" in str(info.value)


@needs_tesseract
def test_an_image_only_pdf_is_ocred_with_auto() -> None:
    data = scanned_pdf(["Invoice number 4711", "Total due: 250 EUR"])
    doc = default_registry(ocr="auto").for_path("scan.pdf").load(data, source="scan.pdf")
    assert "Invoice number 4711" in doc.text and "Total due: 250 EUR" in doc.text
    assert doc.metadata == {"page_count": 1, "ocr_pages": [1]}
    [page] = doc.pages
    assert doc.text[page.start : page.end] == doc.text and doc.text == doc.text.strip()


@needs_tesseract
def test_only_pages_without_a_text_layer_are_ocred() -> None:
    doc = PdfLoader(ocr="auto").load(mixed_pdf(), source="mixed.pdf")
    first, second = (doc.text[p.start : p.end] for p in doc.pages)
    assert first == "Typed first page."
    assert "Scanned second page" in second
    assert doc.metadata["ocr_pages"] == [2]


def test_a_missing_tesseract_is_a_clear_per_file_error(tmp_path: Path) -> None:
    data = scanned_pdf(["Invoice number 4711"])
    loader = PdfLoader(ocr="auto", tesseract_cmd=str(tmp_path / "no-such-tesseract"))
    with pytest.raises(OcrUnavailableError) as info:
        loader.load(data, source="scan.pdf")
    message = str(info.value)
    assert message.startswith("scan.pdf: page 1 has no text layer")
    assert "apt-get install tesseract-ocr" in message and "KAG_TESSERACT_CMD" in message
    assert info.value.code == "ocr_unavailable"


def test_without_tesseract_on_path_the_default_command_fails_the_same_way(tmp_path: Path) -> None:
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(scanned_pdf(["Invoice number 4711"]))
    code = textwrap.dedent(
        f"""
        from ingest.loaders import default_registry
        from kag.errors import OcrUnavailableError
        try:
            default_registry(ocr="auto").for_path("scan.pdf").load(open({str(scan)!r}, "rb").read(), source="scan.pdf")
        except OcrUnavailableError as exc:
            print(exc.code, exc)
        """
    )
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}  # a PATH with no tesseract on it
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ocr_unavailable scan.pdf: page 1 has no text layer")
    assert "KAG_TESSERACT_CMD=tesseract" in out.stdout


def test_unknown_ocr_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="off, auto"):
        PdfLoader(ocr="always")
