"""PDF pages end to end: running headers and footers stay out of the text, the ledger keeps each page's
span, and a citation names the page its quote starts on, not the page its chunk starts on."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fpdf import FPDF
from typer.testing import CliRunner

from ingest.loaders.pdf import PdfLoader, strip_running_lines
from ingest.pipeline import Ingestor
from kag.records import PageSpan, Source, page_range
from pipelines.retrieve import hydrate
from pipelines.verify import Verifier
from tests.ingest.test_pipeline import build_ingestor

PAGE_1 = "Heron billing overview.\nThe Heron service bills every customer once a month."
FACT = "Refunds for duplicate Heron charges are issued within five business days."
PAGE_2 = FACT + "\nThe finance team approves each refund."
QUESTION = "How fast are refunds for duplicate Heron charges issued?"


class _RunningPdf(FPDF):
    """A PDF whose every page has a running header and a "Page n of N" footer."""

    def header(self) -> None:
        self.set_font("helvetica", size=9)
        self.cell(0, 8, "Copperfinch Robotics - Postmortem INC-3188", new_x="LMARGIN", new_y="NEXT")

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("helvetica", size=9)
        self.cell(0, 8, f"Confidential - Page {self.page_no()} of {{nb}}")


def make_pdf(pages: Sequence[str], *, running: bool = False) -> bytes:
    pdf = _RunningPdf() if running else FPDF()
    for text in pages:
        pdf.add_page()
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


# --- running headers and footers ---------------------------------------------------------------

BODIES = [
    "The Heron billing service charges customers monthly.\nInvoices go out on the first day.",
    "A retry bug sent 212 duplicate charges.\nRefunds are issued within five business days.",
    "Magpie brokers retry failed deliveries three times.",
    "Osprey gateways limit each key to 600 requests per minute.",
]


@pytest.mark.parametrize("count", [3, 4])
def test_running_headers_and_footers_are_left_out_and_pages_stay_exact(count: int) -> None:
    doc = PdfLoader().load(make_pdf(BODIES[:count], running=True), source="postmortem.pdf")
    assert "Confidential" not in doc.text and "Postmortem INC-3188" not in doc.text
    assert [p.number for p in doc.pages] == list(range(1, count + 1))
    # each page span is exactly that page's body: the offsets describe the text that is kept
    assert [doc.text[p.start : p.end] for p in doc.pages] == BODIES[:count]
    assert doc.text == "\n\n".join(BODIES[:count])
    assert doc.metadata["running_lines_removed"] == 2 * count
    assert doc.title == "The Heron billing service charges customers monthly."


def test_chunks_of_a_pdf_with_running_lines_are_exact_slices_without_them(embedder) -> None:
    from ingest.chunking import Chunker, HFTokenizer

    doc = PdfLoader().load(make_pdf(BODIES, running=True), source="postmortem.pdf")
    chunks = Chunker(HFTokenizer(embedder.model_path), 24, 4).chunk(doc)
    assert len(chunks) > 1
    for chunk in chunks:
        assert doc.text[chunk.char_start : chunk.char_end] == chunk.text
        assert "Confidential" not in chunk.text and "Page" not in chunk.text


def test_a_line_repeated_in_the_body_or_on_too_few_pages_is_kept() -> None:
    pages = [
        "Status report\nThe gateway is healthy.",
        "Status report\nThe broker is degraded.",
        "Summary\nAll systems were checked.\nStatus report\nThe scheduler is idle.\nNothing failed.",
        "Appendix\nThe ledger is healthy.",
        "Notes\nNothing else.",
    ]
    kept, removed = strip_running_lines(pages)
    # "Status report" heads 2 of 5 pages (below the half) and sits inside a third: a heading, not a header
    assert (kept, removed) == (pages, 0)
    assert strip_running_lines(["only one page\nPage 1 of 1"]) == (["only one page\nPage 1 of 1"], 0)


def test_page_numbers_alone_are_running_lines_and_a_page_of_nothing_else_keeps_its_text() -> None:
    kept, removed = strip_running_lines(["First body.\n1", "Second body.\n2", "3"])
    assert kept == ["First body.", "Second body.", "3"]
    assert removed == 2


# --- page of a citation ------------------------------------------------------------------------


def test_page_range_of_a_span() -> None:
    pages = (PageSpan(1, 0, 10), PageSpan(2, 12, 30), PageSpan(3, 32, 40))
    assert page_range(pages, 0, 10) == (1, 1)
    assert page_range(pages, 14, 20) == (2, 2)
    assert page_range(pages, 5, 20) == (1, 2)  # runs across the break
    assert page_range(pages, 10, 12) == (1, 1)  # the separator counts to the page before it
    assert page_range(pages, 11, 40) == (1, 3)
    assert page_range((), 0, 5) is None


@pytest.fixture
def ingestor(ledger_url: str, tmp_path: Path, embedder, spacy_extractor) -> Iterator[Ingestor]:
    ing = build_ingestor(tmp_path / "data", ledger_url, embedder, spacy_extractor)
    yield ing
    ing.stores.close()


def _ingest_two_pages(ingestor: Ingestor, tmp_path: Path) -> Any:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "heron.pdf").write_bytes(make_pdf([PAGE_1, PAGE_2]))
    report = ingestor.ingest([folder], "billing")
    assert report.status == "completed" and not report.errors, report.errors
    (doc,) = ingestor.stores.ledger.documents("billing")
    return doc


def test_the_ledger_keeps_page_spans_and_a_quote_on_page_2_is_cited_as_page_2(
    ingestor: Ingestor, tmp_path: Path, embedder
) -> None:
    doc = _ingest_two_pages(ingestor, tmp_path)
    assert doc.text == f"{PAGE_1}\n\n{PAGE_2}"
    start_2 = len(PAGE_1) + 2
    assert doc.page_spans == [[1, 0, len(PAGE_1)], [2, start_2, start_2 + len(PAGE_2)]]
    (chunk,) = ingestor.stores.ledger.chunks_of(doc.id)
    # the one chunk straddles the page break, so the chunk itself is on page 1
    assert chunk.char_start < len(PAGE_1) < start_2 < chunk.char_end and chunk.page == 1

    hit = hydrate(ingestor.stores.ledger, ingestor.stores.fulltext.search("refunds duplicate", 5, ["billing"]))[0]
    assert hit.chunk_id == chunk.id and hit.page == 1
    verification = Verifier(embedder).verify(QUESTION, FACT, [Source(1, hit)])
    assert not verification.abstained, verification.reason
    (citation,) = verification.citations
    assert citation.quote == FACT
    assert doc.text[citation.char_start : citation.char_end] == citation.quote
    assert citation.page == 2 and citation.pages == (2, 2)
    assert citation.to_dict()["page"] == 2 and citation.to_dict()["pages"] == [2, 2]


def test_a_document_without_page_spans_cites_its_chunks_page(ingestor: Ingestor, tmp_path: Path, embedder) -> None:
    """Documents ingested before page spans were kept still get a page: their chunk's."""
    doc = _ingest_two_pages(ingestor, tmp_path)
    with ingestor.stores.ledger.session() as s:
        from kag.ledger.models import DocumentRow

        s.get(DocumentRow, doc.id).page_spans = None  # type: ignore[union-attr]
    hit = hydrate(ingestor.stores.ledger, ingestor.stores.fulltext.search("refunds duplicate", 5, ["billing"]))[0]
    assert hit.page_spans == ()
    (citation,) = Verifier(embedder).verify(QUESTION, FACT, [Source(1, hit)]).citations
    assert (citation.page, citation.pages) == (1, None)


# --- where citations are shown: API response, audit record, CLI ---------------------------------


class ScriptedGenerator:
    """The answer pipeline's Generator protocol, answering one fixed text (a unit-test fake: no model)."""

    model_path = "scripted.gguf"
    model_sha256 = "0" * 64

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def model_info(self) -> dict[str, Any]:
        return {"path": self.model_path, "sha256": self.model_sha256}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_budget(self, max_tokens: int | None = None) -> int:
        return 4000

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def stream(self, prompt: str, *, sampling: Any = None, continue_probe: bool = False) -> Iterator[str]:
        yield from self.answer.split(" ")[:1]
        for word in self.answer.split(" ")[1:]:
            yield " " + word

    def yes_probability(self, prompt: str) -> float:
        return 1.0  # always judges the sources to answer

    def complete(self, prompt: str, *, sampling: Any = None) -> Any:
        from pipelines.generate import Completion

        return Completion(self.answer, self.count_tokens(prompt), self.count_tokens(self.answer), 0.0, "stop")

    def warm_up(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def paged_runtime(tmp_path: Path, embedder) -> Iterator[Any]:
    """A real runtime over the two-page PDF whose answer pipeline has a scripted generator."""
    from kag.audit import AuditLog
    from kag.cli.runtime import Runtime
    from pipelines.answer import AnswerPipeline
    from pipelines.rerank import NoReranker, RerankStage
    from tests.kag.api.conftest import api_settings

    runtime = Runtime(api_settings(tmp_path / "data"))
    runtime.__dict__["embedder"] = embedder
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "heron.pdf").write_bytes(make_pdf([PAGE_1, PAGE_2]))
    assert runtime.ingestor.ingest([folder], "hr").status == "completed"
    retriever = runtime.retriever("hybrid")
    runtime.__dict__["generator"] = ScriptedGenerator(f"{FACT} [1]")
    runtime.__dict__["answer_pipeline"] = AnswerPipeline(
        ledger=runtime.stores.ledger,
        retriever=retriever,  # type: ignore[arg-type]
        rerank=RerankStage(NoReranker(), embedder, vectors=runtime.stores.vectors),
        generator=runtime.generator,
        verifiers=runtime.verifier,
        audit=AuditLog(runtime.stores.ledger),
        sampling=runtime.sampling,
    )
    yield runtime
    runtime.__dict__.pop("embedder")  # the session's model: other tests still use it
    runtime.close()


def _page_2_citation(citations: list[dict[str, Any]]) -> dict[str, Any]:
    (citation,) = [c for c in citations if c["quote"] == FACT]
    assert citation["page"] == 2 and citation["pages"] == [2, 2], citation
    return citation


def test_api_answer_and_its_audit_record_cite_page_2(paged_runtime: Any) -> None:
    from fastapi.testclient import TestClient

    from kag.api import create_app
    from tests.kag.api.conftest import make_keys

    keys, _ = make_keys(paged_runtime.stores.ledger)
    with TestClient(create_app(paged_runtime.settings, paged_runtime)) as client:
        headers = {"Authorization": f"Bearer {keys['reader']}"}
        r = client.post("/v1/ask", json={"question": QUESTION}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert not body["abstained"], body["reason"]
        _page_2_citation(body["citations"])
        _page_2_citation([c for s in body["sentences"] for c in s["citations"]])
        record = client.get(f"/v1/audit/{body['audit_id']}", headers={"Authorization": f"Bearer {keys['auditor']}"})
        assert record.status_code == 200, record.text
        _page_2_citation(record.json()["body"]["citations"])


def test_cli_ask_prints_page_2(paged_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import kag.cli as cli

    monkeypatch.setattr(cli, "_runtime", lambda: paged_runtime)
    monkeypatch.setattr(paged_runtime, "close", lambda: None)  # the fixture closes it
    text = CliRunner().invoke(cli.app, ["ask", QUESTION, "-c", "hr"])
    assert text.exit_code == 0, text.output
    assert "p. 2" in text.output and "p. 1" not in text.output
    as_json = CliRunner().invoke(cli.app, ["ask", QUESTION, "-c", "hr", "--json"])
    assert as_json.exit_code == 0, as_json.output
    _page_2_citation(json.loads(as_json.output)["citations"])
