"""Ingestion end to end on real stores, every test on two sets: embedded (SQLite ledger, Qdrant Edge,
Tantivy) and server-style (PostgreSQL ledger, qdrant-client vectors, Qdrant BM25 sparse lexical index;
Qdrant in qdrant-client local mode)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ingest import upkeep
from ingest.chunking import Chunker, HFTokenizer
from ingest.loaders import default_registry
from ingest.pipeline import Ingestor
from kag.errors import DataDirLockedError
from kag.ledger.models import EntityRow, MentionRow, RelationRow
from kag.stores.bundle import Stores, open_stores
from kag.stores.graph import decode_vector
from tests.ingest.corpus_factory import make_bad_files, make_corpus


def build_ingestor(data_dir: Path, ledger_url: str, embedder, extractor, *, indexes: str = "embedded") -> Ingestor:
    stores = open_stores(data_dir=data_dir, database_url=ledger_url, dim=embedder.dim)
    if indexes == "servers":
        from qdrant_client import QdrantClient

        from kag.stores.fulltext_qdrant import QdrantBM25Index
        from kag.stores.vector import QdrantClientVectorIndex

        stores.vectors.close()
        stores.fulltext.close()
        client = QdrantClient(path=str(data_dir / "qdrant-local"))
        stores.vectors = QdrantClientVectorIndex(client, "kag_chunks", embedder.dim)
        stores.fulltext = QdrantBM25Index(client, "kag_lexical", owns_client=True)
    return Ingestor(
        stores,
        embedder,
        Chunker(HFTokenizer(embedder.model_path), 64, 8),
        default_registry(),
        extractor=extractor,
        max_file_bytes=200_000,
        batch_chunks=8,
        fingerprint="test",
    )


@pytest.fixture(params=["sqlite+embedded", "postgresql+servers"])
def ingestor(request: pytest.FixtureRequest, tmp_path: Path, embedder, spacy_extractor) -> Iterator[Ingestor]:
    """The embedded set (SQLite, Qdrant Edge, Tantivy) and the server set (PostgreSQL, qdrant-client,
    Qdrant BM25): every ingestion test runs on each, so each backend runs the full suite."""
    ledger, indexes = request.param.split("+")
    if ledger == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_server_url")
    ing = build_ingestor(tmp_path / "data", url, embedder, spacy_extractor, indexes=indexes)
    yield ing
    ing.stores.close()
    if ledger == "postgresql":
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()


def index_state(stores: Stores) -> dict[str, object]:
    """Everything that must be identical between two runs that should converge."""
    ledger = stores.ledger
    docs = sorted((d.id, d.sha256, d.version, d.status, d.title) for d in ledger.documents())
    with ledger.session() as s:
        graph = (
            int(s.scalar(select(func.count()).select_from(EntityRow)) or 0),
            int(s.scalar(select(func.count()).select_from(MentionRow)) or 0),
            int(s.scalar(select(func.count()).select_from(RelationRow)) or 0),
        )
        # every entity's name is embedded by the end of a job
        unembedded = int(s.scalar(select(func.count()).where(EntityRow.name_vector.is_(None))) or 0)
    return {
        "documents": docs,
        "ledger_chunks": sorted(ledger.chunk_ids()),
        "vector_chunks": sorted(stores.vectors.chunk_ids()),
        "fulltext_chunks": sorted(stores.fulltext.chunk_ids()),
        "graph": graph,
        "unembedded_entities": unembedded,
    }


def test_ingest_every_format_keeps_offsets_and_indexes_everything(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    report = ingestor.ingest([corpus], "hr")
    assert report.status == "completed", report.errors
    assert (report.documents_added, report.documents_failed, report.files_total) == (6, 0, 6)
    ledger = ingestor.stores.ledger
    mimes = set()
    for doc in ledger.documents("hr"):
        mimes.add(doc.mime_type)
        chunks = ledger.chunks_of(doc.id)
        assert chunks, doc.source_uri
        for chunk in chunks:
            assert doc.text[chunk.char_start : chunk.char_end] == chunk.text
    assert len(mimes) == 6
    state = index_state(ingestor.stores)
    assert state["ledger_chunks"] == state["vector_chunks"] == state["fulltext_chunks"]
    assert report.chunks_added == len(state["ledger_chunks"])  # type: ignore[arg-type]
    assert state["graph"][0] > 0 and state["graph"][2] > 0  # type: ignore[index]
    assert upkeep.check(ingestor.stores).consistent


def test_reingest_is_a_no_op_and_a_change_replaces_old_chunks(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    ingestor.ingest([corpus], "hr")
    before = index_state(ingestor.stores)
    again = ingestor.ingest([corpus], "hr")
    assert (again.documents_unchanged, again.chunks_added, again.documents_added) == (6, 0, 0)
    assert index_state(ingestor.stores) == before

    (corpus / "runbook.txt").write_text("Atlas gateway runbook\n\nThe gateway now stores sessions in Postgres.\n")
    changed = ingestor.ingest([corpus], "hr")
    assert (changed.documents_updated, changed.documents_unchanged) == (1, 5)
    after = index_state(ingestor.stores)
    assert after["ledger_chunks"] == after["vector_chunks"] == after["fulltext_chunks"]
    doc = ingestor.stores.ledger.find_document("hr", str((corpus / "runbook.txt").resolve()))
    assert doc is not None and doc.version == 2
    old_ids = set(before["ledger_chunks"]) - set(after["ledger_chunks"])  # type: ignore[arg-type]
    assert old_ids and old_ids.isdisjoint(ingestor.stores.vectors.chunk_ids())
    assert old_ids.isdisjoint(ingestor.stores.fulltext.chunk_ids())
    hits = ingestor.stores.fulltext.search("Redis", 10, ["hr"], document_ids=[doc.id])
    assert hits == []  # the old version's text is gone from the full-text index
    assert upkeep.check(ingestor.stores).consistent


def test_bad_files_fail_alone_with_clear_errors(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    expected = make_bad_files(corpus)
    (corpus / "huge.txt").write_text("big " * 60_000)
    expected["huge.txt"] = "file_too_large"
    report = ingestor.ingest([corpus, tmp_path / "missing-folder"], "hr")
    expected["missing-folder"] = "unreadable_path"
    assert report.status == "completed"
    assert report.documents_added == 6
    got = {Path(e.path).name: e.code for e in report.errors}
    assert got == expected
    assert all(e.message for e in report.errors)
    job, rows = ingestor.stores.ledger.get_job(report.job_id)
    assert job.documents_failed == len(expected) and len(rows) == len(expected)
    assert upkeep.check(ingestor.stores).consistent


def test_job_fails_only_when_every_file_fails(ingestor: Ingestor, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    make_bad_files(bad)
    report = ingestor.ingest([bad], "hr")
    assert report.status == "failed" and report.documents_failed == 4


class CountingListener:
    """A progress listener that counts finished files (the real ProgressListener protocol)."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def on_start(self, files_total: int) -> None:
        self.total = files_total

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        self.done += 1


def test_a_stop_request_interrupts_between_files_and_a_late_one_still_completes(
    ingestor: Ingestor, tmp_path: Path
) -> None:
    # enough files that preparation (which runs ahead of writing, two batches at most) cannot finish first
    corpus = tmp_path / "notes"
    corpus.mkdir()
    for i in range(16):
        (corpus / f"note-{i:02d}.md").write_text(f"# Note {i}\n\n" + f"Team {i} owns service {i}. " * 40)
    early = CountingListener()
    report = ingestor.ingest([corpus], "hr", listener=early, should_stop=lambda: early.done >= 1)
    assert report.status == "interrupted" and 0 < report.files_done < report.files_total
    job, _ = ingestor.stores.ledger.get_job(report.job_id)
    assert job.status == "interrupted"

    # the rest on a second run; a stop that arrives once every file is done leaves the job completed
    late = CountingListener()
    again = ingestor.ingest([corpus], "hr", listener=late, should_stop=lambda: late.done >= late.total)
    assert again.status == "completed" and again.files_done == again.files_total
    assert again.documents_added + again.documents_unchanged == again.files_total


def test_delete_and_sync_leave_nothing_behind(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    ingestor.ingest([corpus], "hr")
    ledger = ingestor.stores.ledger
    doc = ledger.find_document("hr", str((corpus / "leave.md").resolve()))
    assert doc is not None
    doc_chunks = {c.id for c in ledger.chunks_of(doc.id)}
    ingestor.delete_document(doc.id)
    assert doc_chunks.isdisjoint(ingestor.stores.vectors.chunk_ids())
    assert doc_chunks.isdisjoint(ingestor.stores.fulltext.chunk_ids())
    with ledger.session() as s:
        assert s.scalar(select(func.count()).select_from(MentionRow).where(MentionRow.document_id == doc.id)) == 0

    (corpus / "runbook.txt").unlink()
    report = ingestor.ingest([corpus], "hr", sync=True)
    assert report.documents_deleted == 1 and report.documents_added == 1  # leave.md came back
    assert ledger.find_document("hr", str((corpus / "runbook.txt").resolve())) is None
    state = index_state(ingestor.stores)
    assert state["ledger_chunks"] == state["vector_chunks"] == state["fulltext_chunks"]
    assert upkeep.check(ingestor.stores).consistent

    ingestor.delete_collection("hr")
    empty = index_state(ingestor.stores)
    assert empty["documents"] == [] and empty["vector_chunks"] == [] and empty["fulltext_chunks"] == []
    assert empty["graph"] == (0, 0, 0)


def test_collections_are_isolated(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    ingestor.ingest([corpus], "a")
    ingestor.ingest([corpus / "leave.md"], "b")
    a_ids = ingestor.stores.ledger.chunk_ids("a")
    hits = ingestor.stores.fulltext.search("paid time off", 10, ["b"])
    assert hits and all(h.chunk_id not in a_ids for h in hits)
    vec = ingestor.embedder.embed(["paid time off"])[0]
    assert all(h.collection == "b" for h in ingestor.stores.vectors.search(vec, 10, ["b"]))


def test_crash_between_ledger_and_indexes_is_repaired(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    calls = {"n": 0}
    real_add = ingestor.stores.fulltext.add

    def crash_on_second_batch(chunks):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash after the Qdrant upsert")
        return real_add(chunks)

    ingestor.stores.fulltext.add = crash_on_second_batch  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingestor.ingest([corpus], "hr")
    ingestor.stores.fulltext.add = real_add  # type: ignore[method-assign]
    report = upkeep.check(ingestor.stores)
    assert not report.consistent and report.documents_indexing > 0
    again = ingestor.ingest([corpus], "hr")
    assert again.status == "completed"
    state = index_state(ingestor.stores)
    assert state["ledger_chunks"] == state["vector_chunks"] == state["fulltext_chunks"]
    assert all(status == "indexed" for _i, _s, _v, status, _t in state["documents"])  # type: ignore[union-attr]
    assert upkeep.check(ingestor.stores).consistent


def test_entity_names_are_embedded_once_per_job_and_a_job_repairs_a_crash_before_it(
    ingestor: Ingestor, tmp_path: Path
) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    ingestor.ingest([corpus], "hr")
    ledger = ingestor.stores.ledger
    assert index_state(ingestor.stores)["unembedded_entities"] == 0
    entities, _, _, vectors = ledger.graph_links("hr")
    assert len(vectors) == len(entities) > 0
    names = {e[0]: e[2] for e in entities}
    some = sorted(vectors)[:3]
    expected = ingestor.embedder.embed([names[e] for e, _ in some])
    for (_, blob), vector in zip(some, expected, strict=True):
        assert decode_vector(blob) == pytest.approx(vector, abs=1e-3)  # float16 of the name's own embedding
    # a crash after the documents were written but before the names were embedded: the next job,
    # even one with nothing new to ingest, embeds them
    ledger.clear_entity_vectors("hr")
    again = ingestor.ingest([corpus], "hr")
    assert again.documents_unchanged == again.files_total
    assert ledger.entities_without_vectors("hr") == []
    assert sorted(ledger.graph_links("hr")[3]) == sorted(vectors)


def test_doctor_finds_and_repairs_drift_and_reindex_rebuilds(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    ingestor.ingest([corpus], "hr")
    stores = ingestor.stores
    victim = sorted(stores.ledger.chunk_ids("hr"))[0]
    stores.vectors.delete_chunks([victim])
    stores.fulltext.delete_chunks([victim])
    stores.fulltext.commit()
    report = upkeep.check(stores)
    assert not report.consistent
    health = report.collections[0]
    assert health.missing_in_vectors == [victim] and health.missing_in_fulltext == [victim]
    assert upkeep.repair(ingestor).consistent
    before = index_state(stores)
    assert upkeep.reindex(ingestor) == len(before["ledger_chunks"])  # type: ignore[arg-type]
    assert index_state(stores) == before


def test_second_process_on_the_data_dir_gets_a_clear_error(ingestor: Ingestor, embedder) -> None:
    data_dir = ingestor.stores.lock.path.parent  # type: ignore[union-attr]
    with pytest.raises(DataDirLockedError, match="in use by another kag process"):
        open_stores(data_dir=data_dir, database_url="sqlite://", dim=embedder.dim)
