"""Loaders over real files built with real libraries: text, structure, offsets, and each error."""

from __future__ import annotations

import codecs
import io
import json
import zipfile

import docx
import pytest
from fpdf import FPDF

from ingest.loaders import Loader, LoaderRegistry, default_registry
from ingest.loaders.docx import DocxLoader
from ingest.loaders.html import HtmlLoader
from ingest.loaders.jsonl import JsonLinesLoader, JsonLoader
from ingest.loaders.markdown import MarkdownLoader
from ingest.loaders.pdf import PdfLoader
from ingest.loaders.text import TextLoader
from kag.errors import (
    CorruptDocumentError,
    DecodeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedFormatError,
)
from kag.records import ParsedDocument


def make_pdf(pages: list[str], *, title: str | None = None, user_password: str | None = None) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    if user_password is not None:
        pdf.set_encryption(owner_password="owner-secret", user_password=user_password)
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def make_docx(build) -> bytes:
    document = docx.Document()
    build(document)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def assert_offsets(doc: ParsedDocument) -> None:
    """Every offset a loader returns indexes its own text."""
    assert "\r" not in doc.text
    for h in doc.headings:
        assert 0 <= h.start < h.end <= len(doc.text)
        assert doc.text[h.start : h.end] == h.title
    for p in doc.pages:
        assert 0 <= p.start <= p.end <= len(doc.text)


# --- registry ---------------------------------------------------------------------------


def test_default_registry_routes_by_extension_case_insensitively() -> None:
    registry = default_registry()
    assert isinstance(registry.for_path("report.PDF"), PdfLoader)
    assert isinstance(registry.for_path("/a/b/notes.Md"), MarkdownLoader)
    assert isinstance(registry.for_path("page.htm"), HtmlLoader)
    assert isinstance(registry.for_path("x.docx"), DocxLoader)
    assert isinstance(registry.for_path("rows.jsonl"), JsonLinesLoader)
    assert isinstance(registry.for_path("obj.json"), JsonLoader)
    assert isinstance(registry.for_path("a.txt"), TextLoader)
    assert {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".json", ".jsonl"} <= set(
        registry.supported_extensions()
    )
    assert all(isinstance(registry.for_path("f" + ext), Loader) for ext in registry.supported_extensions())


def test_unsupported_extension_names_it_and_the_supported_ones() -> None:
    registry = default_registry()
    with pytest.raises(UnsupportedFormatError) as info:
        registry.for_path("setup.exe")
    assert ".exe" in str(info.value) and ".pdf" in str(info.value)
    with pytest.raises(UnsupportedFormatError, match="no extension"):
        registry.for_path("Makefile")


def test_mime_lookups() -> None:
    registry = default_registry()
    assert isinstance(registry.for_mime("text/html; charset=utf-8"), HtmlLoader)
    assert isinstance(registry.for_mime("Application/PDF"), PdfLoader)
    assert registry.mime_type_for("a.MD") == "text/markdown"
    assert registry.mime_type_for("a.pdf") == "application/pdf"
    with pytest.raises(UnsupportedFormatError):
        registry.for_mime("image/png")
    with pytest.raises(UnsupportedFormatError):
        registry.mime_type_for("a.png")


def test_third_party_loader_registers_like_a_builtin() -> None:
    class CsvLoader:
        def load(self, data: bytes, *, source: str) -> ParsedDocument:
            return ParsedDocument(text=data.decode(), mime_type="text/csv")

    registry = default_registry()
    registry.register(CsvLoader(), extensions=["CSV"], mime_types=["text/csv"])
    assert isinstance(registry.for_path("t.csv"), CsvLoader)
    assert registry.mime_type_for("t.csv") == "text/csv"
    assert ".csv" in registry.supported_extensions()
    with pytest.raises(TypeError):
        LoaderRegistry().register(object(), extensions=[".x"], mime_types=[])  # type: ignore[arg-type]


def test_json_field_names_come_from_the_registry_factory() -> None:
    registry = default_registry(json_text_field="body", json_title_field="name")
    doc = registry.for_path("a.json").load(b'{"name": "N", "body": "the body"}', source="a.json")
    assert doc.text == "N\n\nthe body" and doc.title == "N"


# --- text -------------------------------------------------------------------------------


def test_text_utf8_with_crlf_and_title() -> None:
    doc = TextLoader().load(b"\r\n  First line here  \r\nsecond\rthird\n", source="a.txt")
    assert doc.text == "\n  First line here  \nsecond\nthird\n"
    assert doc.title == "First line here"
    assert doc.mime_type == "text/plain" and doc.pages == () and doc.headings == ()


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF8 + "Grüße aus Köln".encode(),
        "Grüße aus Köln".encode("utf-16"),  # with a BOM, little-endian here
        codecs.BOM_UTF16_BE + "Grüße aus Köln".encode("utf-16-be"),
    ],
)
def test_text_boms(data: bytes) -> None:
    assert TextLoader().load(data, source="a.txt").text == "Grüße aus Köln"


def test_text_title_is_trimmed() -> None:
    doc = TextLoader().load(("word " * 100).encode(), source="a.txt")
    assert doc.title is not None and len(doc.title) <= 120


def test_text_errors() -> None:
    # Latin-1 is read now (tests/ingest/test_loaders_formats.py); binary still is not
    with pytest.raises(DecodeError, match="a.txt"):
        TextLoader().load(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", source="a.txt")
    with pytest.raises(DecodeError, match="NUL"):
        TextLoader().load("no bom".encode("utf-16-le"), source="a.txt")
    with pytest.raises(EmptyDocumentError):
        TextLoader().load(b" \n\t\r\n", source="a.txt")
    with pytest.raises(EmptyDocumentError):
        TextLoader().load(b"", source="a.txt")


# --- markdown ---------------------------------------------------------------------------

MARKDOWN = (
    "# Guide\r\n\r\nIntro text.\r\n\r\n## Install *now*\r\n\r\nRun it.\r\n\r\n"
    "Usage\r\n-----\r\n\r\nCall it.\r\n\r\n```\r\n# not a heading\r\n```\r\n\r\n    # indented code\r\n\r\n"
    "### Deep ###\r\n\r\nEnd.\r\n"
)


def test_markdown_text_is_the_source_and_headings_are_exact() -> None:
    doc = MarkdownLoader().load(MARKDOWN.encode(), source="g.md")
    assert doc.text == MARKDOWN.replace("\r\n", "\n")
    assert [(h.level, h.title) for h in doc.headings] == [
        (1, "Guide"),
        (2, "Install *now*"),
        (2, "Usage"),
        (3, "Deep"),
    ]
    assert doc.title == "Guide"
    assert doc.mime_type == "text/markdown"
    assert_offsets(doc)


def test_markdown_title_from_front_matter_and_its_dashes_are_no_heading() -> None:
    doc = MarkdownLoader().load(b"---\ntitle: 'Front'\ntags: [a]\n---\n\nBody.\n\n## Part\n", source="f.md")
    assert doc.title == "Front"
    assert [h.title for h in doc.headings] == ["Part"]


def test_markdown_front_matter_names_the_evidence_of_its_relations() -> None:
    doc = MarkdownLoader().load(
        b"---\ntitle: Study\nsource_kind: paper\nreproducible: true\nevidence_grade: 'B'\n---\n\nBody.\n", source="p.md"
    )
    assert doc.metadata["source_kind"] == "paper"
    assert doc.metadata["reproducible"] == "true"
    assert doc.metadata["evidence_grade"] == "B"
    plain = MarkdownLoader().load(b"# Notes\n\nsource_kind: blog outside front matter is text.\n", source="n.md")
    assert "source_kind" not in plain.metadata


def test_markdown_front_matter_with_a_bad_source_kind_names_the_file() -> None:
    from kag.errors import DocumentError

    with pytest.raises(DocumentError, match=r"b\.md: source_kind 'blog' is not a source kind") as info:
        MarkdownLoader().load(b"---\nsource_kind: blog\n---\n\nBody.\n", source="b.md")
    assert "paper, implementation, benchmark, document" in str(info.value)


def test_markdown_empty() -> None:
    with pytest.raises(EmptyDocumentError):
        MarkdownLoader().load(b"\n\n   \n", source="e.md")


# --- html -------------------------------------------------------------------------------

HTML = """<!doctype html><html><head><title> The Page </title><style>p {color: red}</style></head>
<body><header><h1>Site name</h1></header><nav><a href="/">Home</a></nav>
<main><h1>Main  title</h1><p>First <b>bold</b>
 paragraph.<br>Second line.</p><script>alert("x")</script>
<ul><li>one</li><li>two</li></ul><h2>Table</h2>
<table><tr><th>key</th><th>value</th></tr><tr><td>a</td><td>1</td></tr></table>
<pre>  indented
    code</pre><h3>Last &amp; least</h3><div>tail text</div></main>
<aside>related</aside><footer>copyright</footer></body></html>"""


def test_html_main_content_blocks_and_headings() -> None:
    doc = HtmlLoader().load(HTML.encode(), source="p.html")
    assert doc.text == (
        "Main title\n\nFirst bold paragraph.\nSecond line.\n\none\n\ntwo\n\nTable\n\n"
        "key | value\n\na | 1\n\n  indented\n    code\n\nLast & least\n\ntail text"
    )
    assert [(h.level, h.title) for h in doc.headings] == [(1, "Main title"), (2, "Table"), (3, "Last & least")]
    assert doc.title == "The Page"
    for dropped in ("Site name", "Home", "alert", "color", "related", "copyright"):
        assert dropped not in doc.text
    assert_offsets(doc)


def test_html_body_fallback_title_from_h1_and_meta_charset() -> None:
    page = '<html><head><meta charset="iso-8859-1"></head><body><h1>Caf\xe9</h1><p>cr\xe8me</p></body></html>'
    doc = HtmlLoader().load(page.encode("latin-1"), source="p.html")
    assert doc.text == "Café\n\ncrème"
    assert doc.title == "Café"
    assert_offsets(doc)


def test_html_errors() -> None:
    with pytest.raises(EmptyDocumentError):
        HtmlLoader().load(b"<html><body><nav>menu</nav><script>x()</script></body></html>", source="p.html")
    with pytest.raises(DecodeError, match="charset"):
        HtmlLoader().load(b"<html><body><p>caf\xe9</p></body></html>", source="p.html")


# --- pdf --------------------------------------------------------------------------------


def test_pdf_pages_and_title() -> None:
    data = make_pdf(["Alpha page text.", "Beta page text.", "Gamma page text."], title="Three Pages")
    doc = PdfLoader().load(data, source="t.pdf")
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert [doc.text[p.start : p.end] for p in doc.pages] == ["Alpha page text.", "Beta page text.", "Gamma page text."]
    assert doc.text == "Alpha page text.\n\nBeta page text.\n\nGamma page text."
    assert doc.title == "Three Pages"
    assert doc.metadata["page_count"] == 3
    assert_offsets(doc)


def test_pdf_title_falls_back_to_first_line() -> None:
    doc = PdfLoader().load(make_pdf(["Heading line\nbody"]), source="t.pdf")
    assert doc.title == "Heading line"


def test_pdf_encrypted_with_a_password() -> None:
    with pytest.raises(EncryptedDocumentError, match="password"):
        PdfLoader().load(make_pdf(["secret"], user_password="pw"), source="s.pdf")


def test_pdf_encrypted_with_an_empty_user_password_opens() -> None:
    doc = PdfLoader().load(make_pdf(["open to all"], user_password=""), source="s.pdf")
    assert doc.text == "open to all"


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_pdf_truncated_is_corrupt(cut: float) -> None:
    data = make_pdf(["some text"] * 3)
    with pytest.raises(CorruptDocumentError, match="t.pdf"):
        PdfLoader().load(data[: int(len(data) * cut)], source="t.pdf")


def test_pdf_garbage_is_corrupt() -> None:
    with pytest.raises(CorruptDocumentError):
        PdfLoader().load(b"this is not a pdf at all", source="t.pdf")


def test_pdf_without_text_asks_for_ocr() -> None:
    with pytest.raises(EmptyDocumentError, match="scanned") as info:
        PdfLoader().load(make_pdf(["", ""]), source="scan.pdf")
    assert "OCR" in str(info.value)


# --- docx -------------------------------------------------------------------------------


def _report(document) -> None:
    document.core_properties.title = "Quarterly Report"
    document.add_heading("Report", 0)
    document.add_heading("Summary", 1)
    document.add_paragraph("Revenue grew.")
    document.add_paragraph("   ")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "region", "sales"
    table.cell(1, 0).text, table.cell(1, 1).text = "north", "10"
    document.add_heading("Details", 2)
    document.add_paragraph("Line one\nline two.")


def test_docx_paragraphs_tables_and_headings() -> None:
    doc = DocxLoader().load(make_docx(_report), source="r.docx")
    assert doc.text == (
        "Report\n\nSummary\n\nRevenue grew.\n\nregion | sales\n\nnorth | 10\n\nDetails\n\nLine one\nline two."
    )
    assert [(h.level, h.title) for h in doc.headings] == [(1, "Report"), (1, "Summary"), (2, "Details")]
    assert doc.title == "Quarterly Report"
    assert_offsets(doc)


def test_docx_title_from_title_style() -> None:
    def build(d) -> None:
        d.add_heading("Styled Title", 0)
        d.add_paragraph("text")

    assert DocxLoader().load(make_docx(build), source="r.docx").title == "Styled Title"


def test_docx_errors() -> None:
    with pytest.raises(CorruptDocumentError, match="r.docx"):
        DocxLoader().load(b"PK\x03\x04 not really a zip", source="r.docx")
    data = make_docx(_report)
    with pytest.raises(CorruptDocumentError):
        DocxLoader().load(data[: len(data) // 2], source="r.docx")
    other_zip = io.BytesIO()
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(CorruptDocumentError):
        DocxLoader().load(other_zip.getvalue(), source="r.docx")
    with pytest.raises(EmptyDocumentError):
        DocxLoader().load(make_docx(lambda d: d.add_paragraph("  ")), source="r.docx")


# --- json / jsonl -----------------------------------------------------------------------


def test_json_list_of_records_becomes_sections() -> None:
    records = [
        {"title": "First", "text": "One.\r\nTwo."},
        {"id": 7, "text": "Seven."},
        {"title": "No text here"},
        {"text": "Anonymous."},
    ]
    doc = JsonLoader().load(json.dumps(records).encode(), source="r.json")
    assert doc.text == "First\n\nOne.\nTwo.\n\n7\n\nSeven.\n\nrecord 4\n\nAnonymous."
    assert [h.title for h in doc.headings] == ["First", "7", "record 4"]
    assert doc.title is None
    assert doc.metadata == {"records": 3, "skipped_records": 1}
    assert_offsets(doc)


def test_json_single_object_titles_the_document() -> None:
    doc = JsonLoader().load(b'\xef\xbb\xbf{"title": "Solo", "text": "Body."}', source="o.json")
    assert doc.title == "Solo" and doc.text == "Solo\n\nBody."


def test_jsonl_records_and_blank_lines() -> None:
    data = b'{"_id": "a1", "title": "A", "text": "alpha"}\n\n{"_id": "b2", "text": "beta"}\n'
    doc = JsonLinesLoader().load(data, source="r.jsonl")
    assert doc.text == "A\n\nalpha\n\nb2\n\nbeta"
    assert [h.title for h in doc.headings] == ["A", "b2"]
    assert_offsets(doc)


def test_json_without_the_text_field_names_field_and_setting() -> None:
    with pytest.raises(EmptyDocumentError) as info:
        JsonLinesLoader().load(b'{"body": "x"}\n{"body": "y"}\n', source="r.jsonl")
    assert "'text'" in str(info.value) and "KAG_JSON_TEXT_FIELD" in str(info.value)
    with pytest.raises(EmptyDocumentError):
        JsonLoader().load(b"[]", source="r.json")


def test_malformed_json_reports_the_line() -> None:
    with pytest.raises(CorruptDocumentError, match="line 3") as info:
        JsonLinesLoader().load(b'{"text": "a"}\n{"text": "b"}\n{"text": \n', source="r.jsonl")
    assert info.value.context["line"] == 3
    with pytest.raises(CorruptDocumentError, match="line 2"):
        JsonLoader().load(b'[\n{"text": "a"},,\n]', source="r.json")
    with pytest.raises(CorruptDocumentError, match="line 1"):
        JsonLinesLoader().load(b"[1, 2]\n", source="r.jsonl")
    with pytest.raises(CorruptDocumentError, match="item 2"):
        JsonLoader().load(b'[{"text": "a"}, "b"]', source="r.json")
    with pytest.raises(CorruptDocumentError):
        JsonLoader().load(b'"just a string"', source="r.json")
