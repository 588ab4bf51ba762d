"""Relation evidence grades and source kinds in the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from kag.errors import DocumentError
from kag.ledger import Ledger
from kag.ledger.models import DocumentRow, RelationRow
from kag.records import ChunkDraft, EntityRecord, GraphExtraction, MentionRecord, RelationRecord

TEXT = "Atlas uses Redis. Redis stores sessions near Atlas."


def _graph(*relations: RelationRecord) -> GraphExtraction:
    return GraphExtraction(
        entities=(EntityRecord("atlas", "Atlas", "ORG"), EntityRecord("redis", "Redis", "PRODUCT")),
        mentions=(MentionRecord("atlas", 0, 0, 5), MentionRecord("redis", 0, 11, 16)),
        relations=relations or (RelationRecord("atlas", "redis", "Uses", 0.9, 0, 0, 17),),
    )


def _write(
    ledger: Ledger, source: str, sha: str, meta: dict[str, Any] | None = None, graph: GraphExtraction | None = None
):
    ledger.ensure_collection("hr")
    return ledger.write_document(
        collection="hr",
        source_uri=source,
        sha256=sha,
        mime_type="text/markdown",
        title="A",
        text=TEXT,
        size_bytes=len(TEXT),
        metadata=meta or {},
        chunks=[ChunkDraft(0, TEXT, 0, len(TEXT), 9)],
        graph=graph or _graph(),
    )


def _grades(ledger: Ledger) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(type, document) -> [(grade, source kind)] of every relation row."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    with ledger.session() as s:
        for r in s.scalars(select(RelationRow)):
            found.setdefault((r.type, r.document_id), []).append((r.grade, r.source_kind))
    return found


def test_one_document_typed_is_b_co_occurrence_and_weak_patterns_are_c(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    doc = _write(
        ledger,
        "/a.md",
        "a" * 64,
        graph=_graph(
            RelationRecord("atlas", "redis", "Uses", 0.9, 0, 0, 17),
            RelationRecord("redis", "atlas", "RelatedTo", 0.5, 0, 18, 51),
            RelationRecord("redis", "atlas", "DependsOn", 0.5, 0, 18, 51),  # through prepositions: weak
        ),
    )
    grades = _grades(ledger)
    assert grades[("Uses", doc.document_id)] == [("B", "document")]
    assert grades[("RelatedTo", doc.document_id)] == [("C", "document")]
    assert grades[("DependsOn", doc.document_id)] == [("C", "document")]


def test_a_second_independent_document_raises_to_a_and_deleting_it_lowers_again(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    first = _write(ledger, "/a.md", "a" * 64)
    second = _write(ledger, "/b.md", "b" * 64)
    grades = _grades(ledger)
    assert grades[("Uses", first.document_id)] == [("A", "document")]  # the older row is regraded too
    assert grades[("Uses", second.document_id)] == [("A", "document")]
    ledger.delete_document(second.document_id)
    assert _grades(ledger) == {("Uses", first.document_id): [("B", "document")]}
    # a new version that no longer states it lowers the other document's rows the same way
    second = _write(ledger, "/b.md", "b" * 64)
    assert _grades(ledger)[("Uses", first.document_id)] == [("A", "document")]
    _write(ledger, "/b.md", "c" * 64, graph=_graph(RelationRecord("atlas", "redis", "RelatedTo", 0.4, 0, 0, 17)))
    assert _grades(ledger)[("Uses", first.document_id)] == [("B", "document")]


def test_the_same_content_twice_is_not_independent(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    first = _write(ledger, "/a.md", "a" * 64)
    _write(ledger, "/copy-of-a.md", "a" * 64)
    assert _grades(ledger)[("Uses", first.document_id)] == [("B", "document")]


def test_metadata_marks_reproducible_sources_kinds_and_raises_grades(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    paper = _write(ledger, "/paper.md", "a" * 64, {"source_kind": "Paper", "reproducible": "true"})
    assert _grades(ledger)[("Uses", paper.document_id)] == [("A", "paper")]
    bench = _write(
        ledger,
        "/bench.md",
        "b" * 64,
        {"source_kind": "benchmark", "evidence_grade": "b"},
        graph=_graph(RelationRecord("atlas", "redis", "RelatedTo", 0.4, 0, 0, 17)),
    )
    assert _grades(ledger)[("RelatedTo", bench.document_id)] == [("B", "benchmark")]  # raised, C -> B
    low = _write(ledger, "/low.md", "c" * 64, {"evidence_grade": "C"})
    assert _grades(ledger)[("Uses", low.document_id)] == [("A", "document")]  # a floor never lowers


@pytest.mark.parametrize(
    ("meta", "message"),
    [({"source_kind": "blog"}, "source_kind 'blog' is not a source kind"), ({"evidence_grade": "Z"}, "not a grade")],
)
def test_bad_evidence_metadata_is_refused_before_anything_is_written(
    ledger_url: str, meta: dict[str, Any], message: str
) -> None:
    ledger = Ledger(ledger_url)
    kept = _write(ledger, "/a.md", "a" * 64)
    with pytest.raises(DocumentError, match=message):
        _write(ledger, "/bad.md", "b" * 64, meta)
    with ledger.session() as s:
        assert s.scalar(select(func.count()).select_from(DocumentRow)) == 1
    assert _grades(ledger) == {("Uses", kept.document_id): [("B", "document")]}


def test_retrieval_links_follow_the_winner_of_a_conflict(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    influences = RelationRecord("atlas", "redis", "Influences", 0.7, 0, 0, 17)
    _write(ledger, "/a.md", "a" * 64, graph=_graph(influences))
    _write(ledger, "/b.md", "b" * 64, graph=_graph(influences))  # two documents: grade A
    # a newer, stronger, but single-document (B) opposite claim about the same pair
    _write(ledger, "/c.md", "c" * 64, graph=_graph(RelationRecord("redis", "atlas", "OppositeTo", 0.95, 0, 0, 17)))
    entities, links, _, _ = ledger.graph_links("hr")
    ids = {e[1]: e[0] for e in entities}
    assert links == [(ids["atlas"], ids["redis"], 0.7)]  # OppositeTo lost on grade, so its 0.95 is not followed
    # without the A grade the newer claim wins
    ledger.delete_document(ledger.find_document("hr", "/b.md").id)  # type: ignore[union-attr]
    _, links, _, _ = ledger.graph_links("hr")
    assert links == [(ids["redis"], ids["atlas"], 0.95)]


def test_a_collection_grade_floor_from_settings_raises_its_relations(ledger_url: str) -> None:
    from kag.settings import Settings

    settings = Settings(_env_file=None, graph_grade_floors={"hr": "B"})
    ledger = Ledger(ledger_url, grade_floors=settings.graph_grade_floors)
    doc = _write(ledger, "/a.md", "a" * 64, graph=_graph(RelationRecord("atlas", "redis", "RelatedTo", 0.4, 0, 0, 17)))
    assert _grades(ledger)[("RelatedTo", doc.document_id)] == [("B", "document")]
    with pytest.raises(ValueError, match="graph_grade_floors"):
        Settings(_env_file=None, graph_grade_floors={"hr": "Z"})


def test_migration_0006_grades_the_relations_already_stored(ledger_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from kag.ledger.store import MIGRATIONS_DIR, create_ledger_engine

    now = datetime(2026, 1, 1, tzinfo=UTC)
    engine = create_ledger_engine(ledger_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0004")
    with engine.begin() as c:
        c.execute(text("INSERT INTO collections (name, description, created_at) VALUES ('hr', '', :now)"), {"now": now})
        for doc in ("d1", "d2"):
            c.execute(
                text(
                    "INSERT INTO documents (id, collection, source_uri, sha256, mime_type, title, version, status, "
                    "size_bytes, text, metadata, created_at, updated_at) "
                    "VALUES (:d, 'hr', :uri, :sha, 'text/plain', '', 1, 'indexed', 1, 'x', '{}', :now, :now)"
                ),
                {"d": doc, "uri": "/" + doc, "sha": doc * 32, "now": now},
            )
            c.execute(
                text(
                    "INSERT INTO chunks (id, document_id, collection, ordinal, text, char_start, char_end, "
                    "heading_path, token_count) VALUES (:c, :d, 'hr', 0, 'x', 0, 1, '[]', 1)"
                ),
                {"c": "c" + doc, "d": doc},
            )
        for e in ("a", "b", "z"):
            c.execute(
                text("INSERT INTO entities (id, collection, key, name, label) VALUES (:e, 'hr', :k, :n, 'X')"),
                {"e": e, "k": e, "n": e},
            )
        rows = [
            ("r1", "a", "b", "Uses", 0.9, "d1"),
            ("r2", "a", "b", "Uses", 0.9, "d2"),  # two documents: A
            ("r3", "a", "z", "Uses", 0.9, "d1"),  # one: B
            ("r4", "b", "z", "RelatedTo", 0.5, "d1"),  # co-occurrence: C
            ("r5", "b", "z", "DependsOn", 0.5, "d2"),  # weak: C
        ]
        for rid, s, t, kind, strength, doc in rows:
            c.execute(
                text(
                    "INSERT INTO relations (id, collection, source_id, target_id, type, strength, chunk_id, "
                    "document_id, evidence_start, evidence_end, created_at) "
                    "VALUES (:r, 'hr', :s, :t, :k, :v, :c, :d, 0, 1, :now)"
                ),
                {"r": rid, "s": s, "t": t, "k": kind, "v": strength, "c": "c" + doc, "d": doc, "now": now},
            )
    engine.dispose()
    ledger = Ledger(ledger_url)  # upgrades to head
    with ledger.session() as s:
        found = {r.id: (r.grade, r.source_kind) for r in s.scalars(select(RelationRow))}
    assert found == {
        "r1": ("A", "document"),
        "r2": ("A", "document"),
        "r3": ("B", "document"),
        "r4": ("C", "document"),
        "r5": ("C", "document"),
    }


def test_regrading_more_triples_than_one_statement_binds(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    keys = [f"e{i}" for i in range(30)]
    graph = GraphExtraction(
        entities=tuple(EntityRecord(k, k, "X") for k in keys),
        mentions=tuple(MentionRecord(k, 0, 0, 5) for k in keys),
        relations=tuple(
            RelationRecord(a, b, "Uses", 0.9, 0, 0, 17) for i, a in enumerate(keys) for b in keys[i + 1 :]
        ),  # 435 triples
    )
    _write(ledger, "/a.md", "a" * 64, graph=graph)
    _write(ledger, "/b.md", "b" * 64, graph=graph)
    grades = _grades(ledger)
    assert sum(len(v) for v in grades.values()) == 870
    assert {g for rows in grades.values() for g, _ in rows} == {"A"}
