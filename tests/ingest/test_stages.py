"""Ingestion's two stages on real stores: a document is searchable (dense and lexical) after stage 1;
stage 2 adds its graph later, and graph retrieval only ever sees documents whose graph is done."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ingest import upkeep
from ingest.pipeline import Ingestor
from ingest.protocols import EMBEDDING, GRAPH, INDEXING, PARSING, StageProgress
from kag.records import ChunkDraft, GraphExtraction
from kag.stores.graph import GraphCache
from pipelines.retrieve import DenseRetriever, GraphRetriever, HybridRetriever, LexicalRetriever
from tests.ingest.corpus_factory import make_corpus
from tests.ingest.test_pipeline import build_ingestor, index_state


@pytest.fixture
def ingestor(ledger_url: str, tmp_path: Path, embedder: Any, spacy_extractor: Any) -> Iterator[Ingestor]:
    ing = build_ingestor(tmp_path / "data", ledger_url, embedder, spacy_extractor)
    yield ing
    ing.stores.close()


def retrievers(ingestor: Ingestor, query_extractor: Any) -> dict[str, Any]:
    stores = ingestor.stores
    dense = DenseRetriever(ingestor.embedder, stores.vectors)
    lexical = LexicalRetriever(stores.fulltext)
    graph = GraphRetriever(query_extractor, GraphCache(stores.ledger, check_seconds=0), embedder=ingestor.embedder)
    hybrid = HybridRetriever({"dense": dense, "lexical": lexical, "graph": graph}, parallel=False)
    return {"dense": dense, "lexical": lexical, "graph": graph, "hybrid": hybrid}


QUESTION = "Which storage does the Atlas gateway use for sessions?"


def test_graph_later_documents_are_searchable_and_the_graph_sees_only_finished_ones(
    ingestor: Ingestor, tmp_path: Path, spacy_extractor: Any
) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    report = ingestor.ingest([corpus], "hr", graph="later")
    assert report.status == "completed" and report.documents_added == 6 and report.graph is None
    ledger = ingestor.stores.ledger
    docs = ledger.documents("hr")
    assert {(d.status, d.graph_status) for d in docs} == {("indexed", "pending")}
    assert ledger.graph_counts("hr") == (0, 0)  # nothing of stage 2 is written yet
    assert ledger.graph_status_counts("hr") == {"pending": 6, "done": 0, "failed": 0}

    found = retrievers(ingestor, spacy_extractor)
    runbook = ledger.find_document("hr", str((corpus / "runbook.txt").resolve()))
    assert runbook is not None
    for mode in ("dense", "lexical", "hybrid"):
        hits = found[mode].retrieve(QUESTION, 5, ["hr"])
        assert hits and runbook.id in {h.document_id for h in hits}, mode
    assert found["graph"].retrieve(QUESTION, 5, ["hr"]) == []  # pending documents: no graph, no error
    health = upkeep.check(ingestor.stores)
    assert health.consistent and health.graph_pending == 6

    built = ingestor.build_graph("hr")
    assert (built.documents_done, built.documents_failed, built.documents_pending) == (6, 0, 0)
    assert built.entities_embedded > 0
    assert ledger.graph_status_counts("hr") == {"pending": 0, "done": 6, "failed": 0}
    graph_hits = found["graph"].retrieve(QUESTION, 5, ["hr"])
    assert runbook.id in {h.document_id for h in graph_hits}
    assert upkeep.check(ingestor.stores).consistent
    # building again finds nothing to do and changes nothing
    state = index_state(ingestor.stores)
    assert ingestor.build_graph("hr").documents_done == 0
    assert index_state(ingestor.stores) == state


def test_graph_now_and_later_end_in_the_same_state(tmp_path: Path, embedder: Any, spacy_extractor: Any) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    states = []
    for mode in ("now", "later"):
        ing = build_ingestor(tmp_path / mode, f"sqlite:///{tmp_path / mode}.db", embedder, spacy_extractor)
        try:
            report = ing.ingest([corpus], "hr", graph=mode)
            if mode == "later":
                assert report.graph is None
                ing.build_graph("hr")
            else:
                assert report.graph is not None and report.graph.documents_done == 6
            states.append(index_state(ing.stores))
        finally:
            ing.stores.close()
    assert states[0] == states[1]
    assert states[0]["graph"][2] > 0  # type: ignore[index]


class PoisonedExtractor:
    """The real spaCy extractor, except on chunks that contain POISON (an ExtractorLike)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def extract(self, chunks: Sequence[ChunkDraft]) -> GraphExtraction:
        if any("POISON" in c.text for c in chunks):
            raise ValueError("the extractor choked on this document")
        return self.inner.extract(chunks)  # type: ignore[no-any-return]


def test_a_document_whose_graph_fails_is_failed_with_the_reason_and_the_rest_go_on(
    ingestor: Ingestor, tmp_path: Path, spacy_extractor: Any
) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    (corpus / "poison.txt").write_text("POISON pill\n\nThe Heron service stores invoices in Postgres.\n")
    assert ingestor.graph_stage is not None
    ingestor.graph_stage.extractor = PoisonedExtractor(spacy_extractor)
    report = ingestor.ingest([corpus], "hr")
    assert report.status == "completed" and report.documents_added == 7
    assert report.graph is not None and (report.graph.documents_done, report.graph.documents_failed) == (6, 1)
    ledger = ingestor.stores.ledger
    poisoned = ledger.find_document("hr", str((corpus / "poison.txt").resolve()))
    assert poisoned is not None and poisoned.status == "indexed" and poisoned.graph_status == "failed"
    assert poisoned.graph_error == "ValueError: the extractor choked on this document"
    assert ledger.graph_failures("hr") == [(poisoned.id, poisoned.source_uri, poisoned.graph_error)]
    # the failed document is still searchable, lexically and densely
    assert poisoned.id in {h.document_id for h in ingestor.stores.fulltext.search("Heron invoices", 5, ["hr"])}
    health = upkeep.check(ingestor.stores)
    assert health.consistent and health.graph_failed == 1
    # a retry with a working extractor finishes it
    ingestor.graph_stage.extractor = spacy_extractor
    assert ingestor.build_graph("hr").documents_done == 0  # failed ones are not retried unasked
    retried = ingestor.build_graph("hr", retry_failed=True)
    assert (retried.documents_done, retried.documents_failed) == (1, 0)
    assert ledger.graph_status_counts("hr")["failed"] == 0


def test_a_document_rewritten_while_its_graph_is_extracted_is_not_given_the_stale_graph(
    ingestor: Ingestor, tmp_path: Path, spacy_extractor: Any
) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    ingestor.ingest([corpus], "hr", graph="later")
    ledger = ingestor.stores.ledger
    doc = ledger.find_document("hr", str((corpus / "runbook.txt").resolve()))
    assert doc is not None
    version, chunks, chunk_ids = ledger.graph_input(doc.id)
    extraction = spacy_extractor.extract(chunks)
    # meanwhile stage 1 writes a new version of the file
    (corpus / "runbook.txt").write_text("Atlas gateway runbook\n\nThe gateway now keeps sessions in Postgres.\n")
    ingestor.ingest([corpus], "hr", graph="later")
    assert ledger.write_graph(doc.id, version, chunk_ids, extraction) is False
    assert ledger.mark_graph_failed(doc.id, version, "too late") is False
    fresh = ledger.get_document(doc.id)
    assert fresh.version == version + 1 and fresh.graph_status == "pending"
    assert ledger.graph_counts("hr") == (0, 0)
    ingestor.build_graph("hr")
    assert upkeep.check(ingestor.stores).consistent


def test_graph_off_leaves_no_graph_status(ledger_url: str, tmp_path: Path, embedder: Any) -> None:
    ing = build_ingestor(tmp_path / "data", ledger_url, embedder, None)
    try:
        ing.ingest([make_corpus(tmp_path / "corpus")], "hr")
        assert {d.graph_status for d in ing.stores.ledger.documents("hr")} == {None}
        assert upkeep.check(ing.stores).graph_pending == 0
        from kag.errors import ConfigurationError

        with pytest.raises(ConfigurationError, match="graph extraction is off"):
            ing.build_graph("hr")
    finally:
        ing.stores.close()


class StageRecorder:
    """A progress listener that also takes stage events (the real protocols)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def on_start(self, files_total: int) -> None:
        self.calls.append(("start", str(files_total)))

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        self.calls.append(("done", Path(path).name))

    def on_stage(self, progress: StageProgress) -> None:
        self.calls.append(("stage", progress.stage, Path(progress.path).name if progress.path else ""))


def test_listeners_hear_each_stage_file_by_file(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    recorder = StageRecorder()
    ingestor.ingest([corpus], "hr", listener=recorder)
    stages = [c[1] for c in recorder.calls if c[0] == "stage"]
    first = {s: stages.index(s) for s in (PARSING, EMBEDDING, INDEXING, GRAPH)}
    assert first[PARSING] < first[EMBEDDING] < first[INDEXING] < first[GRAPH]
    names = {p.name for p in corpus.iterdir()}
    for stage in (PARSING, EMBEDDING, GRAPH):
        assert {c[2] for c in recorder.calls if c[0] == "stage" and c[1] == stage and c[2]} == names, stage
    # every file is parsed before it is done, and done before the graph stage
    for name in names:
        assert recorder.calls.index(("stage", PARSING, name)) < recorder.calls.index(("done", name))
        assert recorder.calls.index(("done", name)) < recorder.calls.index(("stage", GRAPH, name))
