"""The table, slide and email loaders and encoding detection, over files built with real libraries:
text, provenance (sheet, row, slide, attachment) and the offsets invariant, and each error."""

from __future__ import annotations

import datetime as dt
import io
import random
import re
from email.message import EmailMessage

import docx
import openpyxl
import pytest
from fpdf import FPDF
from pptx import Presentation
from pptx.util import Inches

from ingest.chunking import Chunker
from ingest.loaders import LoaderLimits, default_registry
from ingest.loaders.csv import CsvLoader
from ingest.loaders.eml import EmlLoader
from ingest.loaders.markdown import MarkdownLoader
from ingest.loaders.pptx import PptxLoader
from ingest.loaders.text import TextLoader
from ingest.loaders.xlsx import XlsxLoader
from kag.errors import CorruptDocumentError, DecodeError, EmptyDocumentError, FileTooLargeError
from kag.records import ParsedDocument


class WhitespaceTokenizer:
    """Tokens are runs of non-space characters (the Tokenizer protocol, no model)."""

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]


def assert_offsets(doc: ParsedDocument) -> None:
    """Headings and pages index the text, and so does every chunk cut from it."""
    assert "\r" not in doc.text and "\x00" not in doc.text
    for h in doc.headings:
        assert 0 <= h.start < h.end <= len(doc.text)
        assert doc.text[h.start : h.end] == h.title
    for p in doc.pages:
        assert 0 <= p.start <= p.end <= len(doc.text)
    chunks = Chunker(WhitespaceTokenizer(), 24, 4).chunk(doc)
    assert chunks
    for c in chunks:
        assert doc.text[c.char_start : c.char_end] == c.text


def chunks_of(doc: ParsedDocument) -> list:
    return Chunker(WhitespaceTokenizer(), 200).chunk(doc)


# --- encodings ----------------------------------------------------------------------------

LATIN1 = "Grüße aus Köln. Café, crème brûlée et façade à Paris.\n"
CP1252 = "“Smart quotes” cost 5 € – and so on…\nThe naïve café’s œuvre.\n"


@pytest.mark.parametrize(
    ("text", "encoding"), [(LATIN1, "latin-1"), ("caf\xe9 latin-1", "latin-1"), (CP1252, "cp1252")]
)
def test_text_in_a_western_code_page_is_read_and_its_encoding_recorded(text: str, encoding: str) -> None:
    doc = TextLoader().load(text.encode(encoding), source="a.txt")
    assert doc.text == text
    # Latin-1 is read as its superset cp1252, as browsers do
    assert doc.metadata == {"encoding": "cp1252"}


def test_other_code_pages_are_detected_too() -> None:
    text = "Привет, как дела? Это тест кодировки, и он проходит успешно.\n"
    doc = TextLoader().load(text.encode("cp1251"), source="ru.txt")
    assert doc.text == text and doc.metadata["encoding"] == "cp1251"


def test_utf8_and_bom_encodings_are_recorded() -> None:
    assert TextLoader().load("Grüße".encode(), source="a.txt").metadata == {"encoding": "utf-8"}
    assert TextLoader().load("Grüße".encode("utf-16"), source="a.txt").metadata == {"encoding": "utf-16"}
    doc = MarkdownLoader().load("# Café\n\ncrème\n".encode("latin-1"), source="a.md")
    assert doc.title == "Café" and doc.metadata["encoding"] == "cp1252"


def test_a_true_binary_file_is_still_refused_clearly() -> None:
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(png, "PNG")
    with pytest.raises(DecodeError, match="logo.txt: contains NUL bytes, so it is binary") as info:
        TextLoader().load(png.getvalue(), source="logo.txt")
    assert "UTF-8" in (info.value.hint or "")
    rng = random.Random(7)
    noise = bytes(rng.randrange(1, 256) for _ in range(4_000))  # no NUL to give it away
    with pytest.raises(DecodeError, match="noise.txt: .*binary"):
        TextLoader().load(noise, source="noise.txt")


# --- csv ----------------------------------------------------------------------------------


def test_csv_rows_become_records_with_their_row_number() -> None:
    data = 'name;city;note\r\nAlice;Paris;"likes ""tea""; and\r\ncoffee"\r\n;;\r\nBob;Berlin;\r\n'.encode("latin-1")
    doc = CsvLoader().load(data, source="people.csv")
    assert doc.text == (
        'row 2\n\nname: Alice\ncity: Paris\nnote: likes "tea"; and\ncoffee\n\nrow 4\n\nname: Bob\ncity: Berlin'
    )
    assert [(h.level, h.title) for h in doc.headings] == [(1, "row 2"), (1, "row 4")]
    assert doc.metadata == {"encoding": "utf-8", "rows": 2, "columns": ["name", "city", "note"], "delimiter": ";"}
    assert [c.heading_path for c in chunks_of(doc)] == [("row 2",), ("row 4",)]
    assert_offsets(doc)


def test_csv_without_a_header_and_in_latin1() -> None:
    doc = CsvLoader().load("1,Café,3.5\n2,Thé,4\n".encode("latin-1"), source="n.csv")
    assert doc.text == "row 1\n\n1 | Café | 3.5\n\nrow 2\n\n2 | Thé | 4"
    assert doc.metadata["columns"] == [] and doc.metadata["encoding"] == "cp1252"
    assert_offsets(doc)


def test_tsv_and_errors() -> None:
    doc = default_registry().for_path("t.tsv").load(b"a\tb\nx y\tz\n", source="t.tsv")
    assert doc.text == "row 2\n\na: x y\nb: z"
    with pytest.raises(EmptyDocumentError):
        CsvLoader().load(b",,\n,,\n", source="e.csv")
    with pytest.raises(CorruptDocumentError, match="bad.csv: malformed CSV near line"):
        CsvLoader().load(b'a,b\n"x' + b"y" * 200_000 + b'",1\n', source="bad.csv")  # a field over csv's limit
    with pytest.raises(FileTooLargeError, match="KAG_MAX_DOCUMENT_CHARS"):
        CsvLoader(limits=LoaderLimits(max_text_chars=200)).load(b"a\n" + b"word\n" * 100, source="big.csv")


# --- xlsx ---------------------------------------------------------------------------------


def make_xlsx() -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sales"
    sheet.append(["region", "amount", "when"])
    sheet.append(["north", 10.0, dt.date(2024, 1, 31)])
    sheet.append([None, None, None])
    sheet.append(["south", 2.5, "=1+1"])
    other = workbook.create_sheet("Notes")
    other["B3"] = 42
    other["C3"] = "the answer"
    workbook.create_sheet("Empty")
    workbook.properties.title = "Sales book"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_xlsx_sheets_are_pages_and_rows_are_records() -> None:
    doc = XlsxLoader().load(make_xlsx(), source="s.xlsx")
    assert doc.text == (
        "Sales\n\nrow 2\n\nregion: north\namount: 10\nwhen: 2024-01-31T00:00:00\n\nrow 4\n\nregion: south\n"
        "amount: 2.5\n\nNotes\n\nrow 3\n\n42 | the answer\n\nEmpty"
    )
    assert [(p.number, doc.text[p.start : p.end].split("\n")[0]) for p in doc.pages] == [
        (1, "Sales"),
        (2, "Notes"),
        (3, "Empty"),
    ]
    assert doc.title == "Sales book"
    assert doc.metadata == {"sheets": ["Sales", "Notes", "Empty"], "rows": 3}
    provenance = [(c.page, c.heading_path) for c in chunks_of(doc)]
    assert provenance == [(1, ("Sales", "row 2")), (1, ("Sales", "row 4")), (2, ("Notes", "row 3")), (3, ("Empty",))]
    assert_offsets(doc)


def test_xlsx_errors() -> None:
    with pytest.raises(CorruptDocumentError, match="x.xlsx"):
        XlsxLoader().load(b"PK\x03\x04 not a zip", source="x.xlsx")
    with pytest.raises(CorruptDocumentError, match="x.xlsx"):
        XlsxLoader().load(docx_bytes("a word file"), source="x.xlsx")
    empty = openpyxl.Workbook()
    buffer = io.BytesIO()
    empty.save(buffer)
    with pytest.raises(EmptyDocumentError):
        XlsxLoader().load(buffer.getvalue(), source="e.xlsx")
    from kag.errors import EncryptedDocumentError

    with pytest.raises(EncryptedDocumentError, match="password"):
        XlsxLoader().load(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, source="locked.xlsx")


def docx_bytes(text: str) -> bytes:
    document = docx.Document()
    document.add_heading("Attached report", 1)
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# --- pptx ---------------------------------------------------------------------------------


def make_pptx() -> bytes:
    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
    first.shapes.title.text = "Roadmap"
    first.placeholders[1].text_frame.text = "Ship the loader\nthen the docs"
    first.notes_slide.notes_text_frame.text = "Speaker: keep it short."
    deck.slides.add_slide(deck.slide_layouts[6])  # blank: no text at all
    third = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    third.shapes.title.text = "Numbers"
    table = third.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "q1", "q2"
    table.cell(1, 0).text, table.cell(1, 1).text = "3", "5"
    box = third.shapes.add_textbox(Inches(1), Inches(4), Inches(3), Inches(1))
    box.text_frame.text = "Up and to the right."
    buffer = io.BytesIO()
    deck.save(buffer)
    return buffer.getvalue()


def test_pptx_slides_are_pages_with_titles_as_headings() -> None:
    doc = PptxLoader().load(make_pptx(), source="d.pptx")
    assert doc.text == (
        "Roadmap\n\nShip the loader\nthen the docs\n\nSpeaker: keep it short.\n\n"
        "Numbers\n\nq1 | q2\n\n3 | 5\n\nUp and to the right."
    )
    assert [(h.level, h.title) for h in doc.headings] == [(1, "Roadmap"), (1, "Numbers")]
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert doc.text[doc.pages[0].start : doc.pages[0].end].startswith("Roadmap")
    assert doc.pages[1].start == doc.pages[1].end  # the blank slide
    assert doc.text[doc.pages[2].start : doc.pages[2].end].startswith("Numbers")
    assert doc.title == "Roadmap" and doc.metadata == {"slide_count": 3}
    assert [(c.page, c.heading_path) for c in chunks_of(doc)] == [(1, ("Roadmap",)), (3, ("Numbers",))]
    assert_offsets(doc)


def test_pptx_errors() -> None:
    with pytest.raises(CorruptDocumentError, match="d.pptx"):
        PptxLoader().load(docx_bytes("not slides"), source="d.pptx")
    deck = Presentation()
    deck.slides.add_slide(deck.slide_layouts[6])
    buffer = io.BytesIO()
    deck.save(buffer)
    with pytest.raises(EmptyDocumentError, match="no slide has text"):
        PptxLoader().load(buffer.getvalue(), source="blank.pptx")


# --- eml ----------------------------------------------------------------------------------


def make_pdf(text: str) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def make_email(*, html: bool = False) -> bytes:
    message = EmailMessage()
    message["Subject"] = "Quarterly numbers"
    message["From"] = "Alice <alice@example.com>"
    message["To"] = "bob@example.com"
    message["Date"] = "Tue, 02 Jan 2024 10:00:00 +0000"
    message["Message-ID"] = "<q1@example.com>"
    message.set_content("Hi Bob,\r\nthe numbers are attached.\r\n\r\nAlice\r\n", charset="iso-8859-1")
    if html:
        message.add_alternative("<html><body><h1>Hi Bob</h1><p>the numbers</p></body></html>", subtype="html")
    message.add_attachment(
        docx_bytes("Revenue grew by ten percent."),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="report.docx",
    )
    message.add_attachment(make_pdf("Costs fell."), maintype="application", subtype="pdf", filename="costs.pdf")
    message.add_attachment(b"%PDF-1.4 truncated", maintype="application", subtype="pdf", filename="broken.pdf")
    message.add_attachment(b"\x89PNG\r\n\x1a\n", maintype="image", subtype="png", filename="logo.png")
    return message.as_bytes()


def test_eml_headers_body_and_attachments_as_sections() -> None:
    doc = default_registry().for_path("m.eml").load(make_email(), source="m.eml")
    assert doc.text == (
        "Quarterly numbers\n\nFrom: Alice <alice@example.com>\nTo: bob@example.com\n"
        "Date: Tue, 02 Jan 2024 10:00:00 +0000\n\nHi Bob,\nthe numbers are attached.\n\nAlice\n\n"
        "Attachment: report.docx\n\nAttached report\n\nRevenue grew by ten percent.\n\n"
        "Attachment: costs.pdf\n\nCosts fell."
    )
    assert [(h.level, h.title) for h in doc.headings] == [
        (1, "Quarterly numbers"),
        (1, "Attachment: report.docx"),
        (2, "Attached report"),
        (1, "Attachment: costs.pdf"),
    ]
    assert doc.title == "Quarterly numbers" and doc.mime_type == "message/rfc822"
    meta = doc.metadata
    assert meta["headers"] == {
        "subject": "Quarterly numbers",
        "from": "Alice <alice@example.com>",
        "to": "bob@example.com",
        "date": "Tue, 02 Jan 2024 10:00:00 +0000",
        "message-id": "<q1@example.com>",
    }
    by_name = {a["name"]: a for a in meta["attachments"]}
    assert doc.text[by_name["costs.pdf"]["start"] : by_name["costs.pdf"]["end"]] == "Costs fell."
    assert by_name["report.docx"]["mime_type"].endswith("wordprocessingml.document")
    # the broken attachment fails alone, with the PDF loader's own error; the logo is no error
    [error] = meta["attachment_errors"]
    assert error["attachment"] == "broken.pdf" and error["code"] == "corrupt_document"
    assert error["message"].startswith("m.eml#broken.pdf: not a readable PDF")
    assert meta["attachments_skipped"] == [{"attachment": "logo.png", "mime_type": "image/png"}]
    paths = [c.heading_path for c in chunks_of(doc)]
    assert ("Attachment: report.docx", "Attached report") in paths and ("Attachment: costs.pdf",) in paths
    assert_offsets(doc)


def test_eml_html_body_and_a_forwarded_message() -> None:
    outer = EmailMessage()
    outer["Subject"] = "Fwd: numbers"
    outer.set_content("See below.")
    inner = EmailMessage()
    inner["Subject"] = "Inner"
    inner.set_content("Inner body.")
    outer.add_attachment(inner)
    doc = EmlLoader(default_registry()).load(outer.as_bytes(), source="f.eml")
    assert doc.text == "Fwd: numbers\n\nSee below.\n\nAttachment: attachment-1.eml\n\nInner\n\nInner body."
    assert_offsets(doc)
    html = default_registry().for_path("h.eml").load(make_email(html=True), source="h.eml")
    assert "Hi Bob,\nthe numbers are attached." in html.text  # text/plain preferred over HTML
    only_html = EmailMessage()
    only_html["Subject"] = "H"
    only_html.set_content("<html><body><h1>Big news</h1><p>details</p></body></html>", subtype="html")
    doc = EmlLoader(default_registry()).load(only_html.as_bytes(), source="o.eml")
    assert doc.text == "H\n\nBig news\n\ndetails"
    assert [(h.level, h.title) for h in doc.headings] == [(1, "H"), (2, "Big news")]


def test_eml_empty() -> None:
    with pytest.raises(EmptyDocumentError):
        EmlLoader(default_registry()).load(b"\n\n", source="e.eml")
