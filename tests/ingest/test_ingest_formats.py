"""The new formats through a real ingestion job: provenance reaches the ledger's chunks, and a part or
a file that cannot be read fails alone while everything else goes in (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path

import openpyxl

from ingest.chunking import Chunker
from ingest.loaders import default_registry
from ingest.pipeline import Ingestor
from kag.stores.bundle import open_stores
from tests.ingest.test_loaders_formats import make_email, make_pptx
from tests.ingest.test_ocr import scanned_pdf


class WhitespaceTokenizer:
    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]


def test_new_formats_ingest_with_provenance_and_fail_alone(tmp_path: Path, ledger_url: str, embedder) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "mail.eml").write_bytes(make_email())
    (folder / "deck.pptx").write_bytes(make_pptx())
    (folder / "people.csv").write_bytes("name,city\nZoë,Köln\n".encode("latin-1"))
    workbook = openpyxl.Workbook()
    workbook.active.title = "Q1"
    workbook.active.append(["region", "amount"])
    workbook.active.append(["north", 10])
    workbook.save(folder / "book.xlsx")
    (folder / "scan.pdf").write_bytes(scanned_pdf(["Invoice 4711"]))
    registry = default_registry(ocr="auto", tesseract_cmd=str(tmp_path / "missing-tesseract"))
    stores = open_stores(data_dir=tmp_path / "data", database_url=ledger_url, dim=embedder.dim)
    try:
        ingestor = Ingestor(stores, embedder, Chunker(WhitespaceTokenizer(), 64), registry, fingerprint="t")
        report = ingestor.ingest([folder], "c")
        assert (report.documents_added, report.documents_failed) == (4, 1)
        errors = sorted((Path(e.path).name, e.code) for e in report.errors)
        # the scan fails for want of tesseract; the email's broken attachment fails alone
        assert errors == [("mail.eml#broken.pdf", "corrupt_document"), ("scan.pdf", "ocr_unavailable")]
        _, job_errors = stores.ledger.get_job(report.job_id)
        assert sorted(Path(e.path).name for e in job_errors) == ["mail.eml#broken.pdf", "scan.pdf"]
        docs = {Path(d.source_uri).name: d for d in stores.ledger.documents(collection="c")}
        assert sorted(docs) == ["book.xlsx", "deck.pptx", "mail.eml", "people.csv"]
        assert docs["people.csv"].meta["encoding"] == "cp1252"
        assert docs["mail.eml"].meta["headers"]["subject"] == "Quarterly numbers"
        provenance = {
            name: [(c.page, tuple(c.heading_path)) for c in stores.ledger.chunks_of(doc.id)]
            for name, doc in docs.items()
        }
        assert provenance["book.xlsx"] == [(1, ("Q1", "row 2"))]
        assert provenance["people.csv"] == [(None, ("row 2",))]
        assert (3, ("Numbers",)) in provenance["deck.pptx"]
        assert (None, ("Attachment: costs.pdf",)) in provenance["mail.eml"]
        for doc in docs.values():
            for chunk in stores.ledger.chunks_of(doc.id):
                assert doc.text[chunk.char_start : chunk.char_end] == chunk.text
    finally:
        stores.close()
