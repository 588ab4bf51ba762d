"""What a file may expand to: zip bombs refused before parsing with bounded memory, the text limit,
the file-size limit in MB of 10^6 bytes, and the registry's import boundary."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterable
from pathlib import Path

import docx
import pytest

from ingest.chunking import Chunker
from ingest.loaders import LoaderLimits, default_registry
from ingest.loaders.docx import DocxLoader
from ingest.loaders.pptx import PptxLoader
from ingest.loaders.xlsx import XlsxLoader
from ingest.pipeline import FileError, Ingestor, Preparer, _Prepared
from kag.errors import CorruptDocumentError, FileTooLargeError
from kag.settings import Settings
from kag.units import MB

ROOT = Path(__file__).resolve().parents[2]

PARAGRAPH = b"<w:p><w:r><w:t>a</w:t></w:r></w:p>"


class WhitespaceTokenizer:
    """Tokens are runs of non-space characters (the Tokenizer protocol, no model)."""

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        import re

        return [m.span() for m in re.finditer(r"\S+", text)]


def real_docx(text: str = "A real paragraph.") -> bytes:
    document = docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def docx_bomb(paragraphs: int) -> bytes:
    """A valid .docx whose document.xml is `paragraphs` tiny paragraphs: a few hundred KB on disk."""
    source = zipfile.ZipFile(io.BytesIO(real_docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                bomb.writestr(item, source.read(item))
        original = source.read("word/document.xml")
        head, tail = original.split(b"<w:body>", 1)
        with bomb.open("word/document.xml", "w") as part:  # streamed: the test never holds it whole
            part.write(head + b"<w:body>")
            block = PARAGRAPH * 10_000
            for _ in range(paragraphs // 10_000):
                part.write(block)
            part.write(tail)
    return out.getvalue()


def zip_with(entries: Iterable[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return out.getvalue()


# --- the import circle ----------------------------------------------------------------------


def test_importing_the_loader_base_imports_no_concrete_loader() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import ingest.loaders.base
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("ingest.loaders"))))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout) == ["ingest.loaders", "ingest.loaders.base"]


def test_public_import_paths_still_work() -> None:
    from ingest.loaders import Loader, LoaderRegistry
    from ingest.loaders.registry import LoaderRegistry as Direct
    from ingest.loaders.registry import default_registry as direct_default

    assert LoaderRegistry is Direct and default_registry is direct_default
    assert isinstance(default_registry(), LoaderRegistry)
    assert all(isinstance(default_registry().for_path("f" + e), Loader) for e in (".csv", ".xlsx", ".pptx", ".eml"))
    import ingest.loaders

    with pytest.raises(AttributeError):
        ingest.loaders.no_such_name  # noqa: B018


# --- zip bombs --------------------------------------------------------------------------


_MEASURE = """
import json, resource, sys
from ingest.loaders.docx import DocxLoader
from kag.errors import DocumentError

# a guard against the bug itself: without the zip check this would take gigabytes
resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    DocxLoader().load(data, source=sys.argv[1])
    result = {"code": None, "message": ""}
except DocumentError as exc:
    result = {"code": exc.code, "message": str(exc)}
except MemoryError:
    result = {"code": "MemoryError", "message": ""}
result["peak_growth_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(result))
"""


@pytest.mark.parametrize(
    ("paragraphs", "setting"),
    [
        (4_000_000, "KAG_MAX_UNCOMPRESSED_MB"),  # 140 MB inside, over the 100 MB total
        (1_500_000, "KAG_MAX_ZIP_RATIO"),  # 52 MB of tiny paragraphs: under the total, inflates ~900-fold
    ],
)
def test_docx_bomb_is_refused_before_parsing_with_bounded_memory(tmp_path: Path, paragraphs: int, setting: str) -> None:
    bomb = tmp_path / "bomb.docx"
    bomb.write_bytes(docx_bomb(paragraphs))
    assert bomb.stat().st_size < 1 * MB
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(bomb)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["code"] == "file_too_large", result
    assert str(bomb) in result["message"] and setting in result["message"]
    # peak memory grows by about the compressed file, not by what it inflates to
    assert result["peak_growth_kb"] < 40_000, result


@pytest.mark.parametrize(
    ("loader", "part"),
    [
        (DocxLoader, "word/document.xml"),
        (XlsxLoader, "xl/worksheets/sheet1.xml"),
        (PptxLoader, "ppt/slides/slide1.xml"),
    ],
)
def test_every_zip_format_checks_sizes_entries_and_ratio(loader, part: str) -> None:
    limits = LoaderLimits(max_uncompressed_bytes=2 * MB, max_zip_entries=50, max_zip_ratio=100)
    # total: three 1 MB entries of random-ish text (low ratio) pass 2 MB together
    noise = bytes((i * 7919) % 251 for i in range(1 * MB))
    with pytest.raises(FileTooLargeError, match="KAG_MAX_UNCOMPRESSED_MB") as info:
        loader(limits=limits).load(zip_with([(f"{part}.{i}", noise) for i in range(3)]), source="big.x")
    assert "big.x" in str(info.value) and "2 MB" in str(info.value)
    with pytest.raises(FileTooLargeError, match="51 zip entries.*KAG_MAX_ZIP_ENTRIES"):
        loader(limits=limits).load(zip_with([(f"e{i}", b"x") for i in range(51)]), source="many.x")
    with pytest.raises(FileTooLargeError, match="KAG_MAX_ZIP_RATIO") as info:
        loader(limits=limits).load(zip_with([(part, b" " * (1 * MB + 1))]), source="ratio.x")
    assert part in str(info.value)
    # under every limit the file goes on to the parser, which finds it is no real document
    with pytest.raises(CorruptDocumentError):
        loader(limits=limits).load(zip_with([("hello.txt", b"hi")]), source="plain.x")


def test_zip_limits_come_from_the_settings() -> None:
    spec_limits = Settings(max_uncompressed_mb=0.5, max_zip_entries=7, max_zip_ratio=3, max_document_chars=99)
    from ingest.executors import PrepareSpec

    registry = PrepareSpec.from_settings(spec_limits, "f").build_registry()
    loader = registry.for_path("a.docx")
    assert isinstance(loader, DocxLoader)
    assert loader.limits == LoaderLimits(
        max_uncompressed_bytes=500_000, max_zip_entries=7, max_zip_ratio=3, max_text_chars=99
    )


def test_text_limit_stops_a_loader_early() -> None:
    data = real_docx("word " * 300)
    with pytest.raises(FileTooLargeError, match="1,000 characters.*KAG_MAX_DOCUMENT_CHARS"):
        DocxLoader(limits=LoaderLimits(max_text_chars=1_000)).load(data, source="long.docx")
    assert DocxLoader(limits=LoaderLimits(max_text_chars=2_000)).load(data, source="long.docx").text


def test_text_limit_holds_for_every_loader_in_the_preparer(tmp_path: Path) -> None:
    preparer = Preparer(Chunker(WhitespaceTokenizer(), 32), default_registry(), max_document_chars=100)
    long, short = tmp_path / "long.txt", tmp_path / "short.txt"
    long.write_text("x" * 101)
    short.write_text("x" * 100)
    err = preparer.prepare(long, "c", None)
    assert isinstance(err, FileError) and err.code == "file_too_large"
    assert "100 characters (101 found)" in err.message and "KAG_MAX_DOCUMENT_CHARS" in err.message
    assert isinstance(preparer.prepare(short, "c", None), _Prepared)


def test_a_bomb_fails_alone_and_the_rest_of_its_folder_goes_in(tmp_path: Path, embedder) -> None:
    from kag.stores.bundle import open_stores

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.docx").write_bytes(docx_bomb(4_000_000))
    (folder / "good.docx").write_bytes(real_docx("The good document survives."))
    (folder / "notes.txt").write_text("Plain notes are ingested too.")
    stores = open_stores(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'l.sqlite3'}", dim=embedder.dim
    )
    try:
        ingestor = Ingestor(stores, embedder, Chunker(WhitespaceTokenizer(), 64), default_registry(), fingerprint="t")
        report = ingestor.ingest([folder], "c")
        assert (report.documents_added, report.documents_failed) == (2, 1)
        assert [(Path(e.path).name, e.code) for e in report.errors] == [("bomb.docx", "file_too_large")]
        titles = sorted(d.title for d in stores.ledger.documents(collection="c"))
        assert titles == ["Plain notes are ingested too.", "The good document survives."]
    finally:
        stores.close()


# --- the file-size limit: MB are 10^6 bytes ---------------------------------------------


def test_file_size_limit_is_in_mb_of_a_million_bytes(tmp_path: Path) -> None:
    assert Settings().max_file_bytes == 50_000_000
    assert Settings(max_file_size_mb=0.002).max_file_bytes == 2_000
    preparer = Preparer(
        Chunker(WhitespaceTokenizer(), 32), default_registry(), max_file_bytes=Settings().max_file_bytes
    )
    at_limit, over = tmp_path / "at.txt", tmp_path / "over.txt"
    with open(at_limit, "wb") as f:
        f.truncate(50_000_000)  # sparse: all NUL bytes, refused as binary, not for its size
    with open(over, "wb") as f:
        f.truncate(50_000_001)
    err = preparer.prepare(at_limit, "c", None)
    assert isinstance(err, FileError) and err.code == "undecodable"
    err = preparer.prepare(over, "c", None)
    assert isinstance(err, FileError) and err.code == "file_too_large"
    assert "is 50.0 MB (50,000,001 bytes), over the 50 MB limit" in err.message
    assert "KAG_MAX_FILE_SIZE_MB" in err.message and "10^6" in err.message


def test_a_zip_that_understates_its_sizes_is_cut_at_the_stated_size() -> None:
    """zipfile stops inflating an entry at its declared size, so the declared sums bound memory."""
    import struct

    data = bytearray(docx_bomb(4_000_000))
    at = data.find(b"PK\x01\x02")  # each central-directory header: claim 1,000 bytes uncompressed
    while at >= 0:
        struct.pack_into("<I", data, at + 24, 1_000)
        at = data.find(b"PK\x01\x02", at + 4)
    with pytest.raises(CorruptDocumentError, match="liar.docx"):
        DocxLoader().load(bytes(data), source="liar.docx")
