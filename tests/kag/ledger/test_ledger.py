"""The ledger on SQLite and PostgreSQL: the same tests, both backends."""

from __future__ import annotations

from sqlalchemy import func, inspect, select

from kag.ledger import Ledger
from kag.ledger.models import ChunkRow, DocumentRow, EntityRow, MentionRow, RelationRow
from kag.records import ChunkDraft, EntityRecord, GraphExtraction, MentionRecord, RelationRecord

TEXT = "Atlas uses Redis. Redis stores sessions."


def _chunks() -> list[ChunkDraft]:
    return [
        ChunkDraft(0, "Atlas uses Redis.", 0, 17, 5, page=1, heading_path=("Intro",)),
        ChunkDraft(1, "Redis stores sessions.", 18, 40, 5, page=1, heading_path=("Intro",)),
    ]


def _graph() -> GraphExtraction:
    return GraphExtraction(
        entities=(EntityRecord("atlas", "Atlas", "ORG"), EntityRecord("redis", "Redis", "PRODUCT")),
        mentions=(MentionRecord("atlas", 0, 0, 5), MentionRecord("redis", 0, 11, 16), MentionRecord("redis", 1, 0, 5)),
        relations=(RelationRecord("atlas", "redis", "Uses", 0.9, 0, 0, 17),),
    )


def _write(
    ledger: Ledger,
    sha: str = "a" * 64,
    text: str = TEXT,
    collection: str = "hr",
    *,
    source: str = "/docs/a.md",
    chunks: list[ChunkDraft] | None = None,
    graph: GraphExtraction | None = None,
):
    ledger.ensure_collection(collection)
    return ledger.write_document(
        collection=collection,
        source_uri=source,
        sha256=sha,
        mime_type="text/markdown",
        title="A",
        text=text,
        size_bytes=len(text),
        metadata={"k": "v"},
        chunks=_chunks() if chunks is None else chunks,
        graph=_graph() if graph is None else graph,
    )


def _count(ledger: Ledger, model: type) -> int:
    with ledger.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_migrations_create_every_table_and_reopen_is_a_no_op(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    tables = set(inspect(ledger.engine).get_table_names())
    assert {
        "collections",
        "documents",
        "chunks",
        "entities",
        "mentions",
        "relations",
        "ingest_jobs",
        "job_errors",
        "alembic_version",
    } <= tables
    ledger.close()
    Ledger(ledger_url).close()


def test_write_document_stores_chunks_offsets_and_graph(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    write = _write(ledger)
    assert write.version == 1 and len(write.chunks) == 2
    doc = ledger.get_document(write.document_id)
    assert doc.status == "indexing" and doc.meta == {"k": "v"}
    for chunk in ledger.chunks_of(write.document_id):
        assert doc.text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.heading_path == ["Intro"] and chunk.page == 1
    assert _count(ledger, EntityRow) == 2 and _count(ledger, MentionRow) == 3 and _count(ledger, RelationRow) == 1
    ledger.mark_indexed([write.document_id])
    assert ledger.get_document(write.document_id).status == "indexed"
    ledger.close()


def test_new_version_replaces_chunks_and_keeps_document_id(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    first = _write(ledger)
    second = _write(ledger, sha="b" * 64, text=TEXT + " ")
    assert second.document_id == first.document_id and second.version == 2
    assert {c.chunk_id for c in first.chunks}.isdisjoint({c.chunk_id for c in second.chunks})
    assert ledger.chunk_ids() == {c.chunk_id for c in second.chunks}
    assert _count(ledger, MentionRow) == 3 and _count(ledger, RelationRow) == 1
    ledger.close()


def test_entities_only_an_old_version_mentioned_go_with_it_and_shared_ones_stay(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    first = _write(ledger)
    other = _write(  # a second document that also mentions Redis
        ledger,
        "c" * 64,
        "Redis.",
        source="/docs/b.md",
        chunks=[ChunkDraft(0, "Redis.", 0, 6, 2)],
        graph=GraphExtraction(
            entities=(EntityRecord("redis", "Redis", "PRODUCT"),), mentions=(MentionRecord("redis", 0, 0, 5),)
        ),
    )
    # the new version of a.md mentions only Kafka; "ghost" is named by the extractor but never mentioned
    _write(
        ledger,
        "d" * 64,
        "Kafka.",
        chunks=[ChunkDraft(0, "Kafka.", 0, 6, 2)],
        graph=GraphExtraction(
            entities=(EntityRecord("kafka", "Kafka", "PRODUCT"), EntityRecord("ghost", "Ghost", "ORG")),
            mentions=(MentionRecord("kafka", 0, 0, 5),),
        ),
    )
    with ledger.session() as s:
        keys = set(s.scalars(select(EntityRow.key)))
    # atlas went with a.md's old version, in the same transaction (no mark_indexed needed); redis is
    # still mentioned by b.md; ghost never landed
    assert keys == {"redis", "kafka"}
    ledger.delete_document(first.document_id)
    ledger.delete_document(other.document_id)
    assert _count(ledger, EntityRow) == 0 and _count(ledger, MentionRow) == 0
    ledger.close()


def test_entity_name_vectors_are_stored_listed_cleared_and_loaded_with_the_links(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    _write(ledger)
    _write(ledger, collection="other")
    missing = ledger.entities_without_vectors("hr")
    assert {name for _, name in missing} == {"Atlas", "Redis"}
    atlas = next(e for e, name in missing if name == "Atlas")
    # an id deleted meanwhile is skipped, not an error
    ledger.set_entity_vectors({atlas: b"\x00<" * 4, "gone": b"\x00<" * 4})
    assert [name for _, name in ledger.entities_without_vectors("hr")] == ["Redis"]
    assert len(ledger.entities_without_vectors("other")) == 2  # another collection's entities untouched
    _, _, _, vectors = ledger.graph_links("hr")
    assert vectors == [(atlas, b"\x00<" * 4)]
    ledger.clear_entity_vectors("other")  # a no-op there; "hr" keeps its vector
    assert ledger.graph_links("hr")[3] == vectors
    ledger.clear_entity_vectors()
    assert ledger.graph_links("hr")[3] == [] and len(ledger.entities_without_vectors("hr")) == 2
    ledger.close()


def test_get_chunks_takes_more_ids_than_one_statement_may_bind(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    write = _write(ledger)
    wanted = [c.chunk_id for c in write.chunks]
    asked = [f"c_missing_{i}" for i in range(40_000)] + wanted + wanted  # SQLite binds at most 32,766
    found = ledger.get_chunks(asked)
    assert sorted(found) == sorted(wanted)
    assert all(doc.id == write.document_id for _, doc in found.values())
    assert ledger.get_chunks([]) == {}
    ledger.close()


def test_delete_document_leaves_nothing_behind(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    write = _write(ledger)
    ledger.mark_indexed([write.document_id])
    ledger.delete_document(write.document_id)
    for model in (DocumentRow, ChunkRow, MentionRow, RelationRow, EntityRow):
        assert _count(ledger, model) == 0, model.__tablename__
    ledger.close()


def test_delete_collection_cascades(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    _write(ledger, collection="a")
    other = _write(ledger, collection="b")
    ledger.delete_collection("a")
    assert ledger.collections() == ["b"]
    assert ledger.chunk_ids() == {c.chunk_id for c in other.chunks}
    assert ledger.graph_counts("a") == (0, 0) and ledger.graph_counts("b") == (2, 1)
    ledger.close()


def test_jobs_record_counts_errors_and_interruption(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.ensure_collection("hr")
    ledger.create_job("j1", "hr", {"paths": ["x"]})
    ledger.update_job("j1", documents_added=2, chunks_added=7)
    ledger.add_job_error("j1", "bad.pdf", "corrupt_document", "cannot parse bad.pdf")
    assert ledger.interrupt_running_jobs() == 1
    job, errors = ledger.get_job("j1")
    assert (job.status, job.documents_added, job.chunks_added) == ("interrupted", 2, 7)
    assert [(e.path, e.code) for e in errors] == [("bad.pdf", "corrupt_document")]
    ledger.close()


def test_vectors_of_another_size_count_as_missing_and_are_found_by_name(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    _write(ledger)
    ids = dict((name, e) for e, name in ledger.entities_without_vectors("hr"))
    ledger.set_entity_vectors({ids["Atlas"]: b"\x00<" * 4, ids["Redis"]: b"\x00<" * 8})
    assert ledger.entities_without_vectors("hr") == []
    # a name embedder of 8 dimensions (16 bytes) wants Atlas again: its 4-dimension vector is another model's
    assert ledger.entities_without_vectors("hr", vector_bytes=16) == [(ids["Atlas"], "Atlas")]
    assert ledger.vectors_by_name("hr", ["Redis", "Atlas", "Nope"], 16) == {"Redis": b"\x00<" * 8}
    assert ledger.vectors_by_name("other", ["Redis"], 16) == {}
    ledger.close()
