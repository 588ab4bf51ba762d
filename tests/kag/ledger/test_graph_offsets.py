"""Relation evidence and mention offsets are document-absolute in the ledger, like every other offset:
`document.text[evidence_start:evidence_end]` is the evidence; migration 0007 converts older rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import select

from ingest.pipeline import Ingestor
from kag.ledger import Ledger
from kag.ledger.models import ChunkRow, EntityRow, MentionRow, RelationRow
from kag.ledger.store import MIGRATIONS_DIR, create_ledger_engine
from kag.records import ChunkDraft, EntityRecord, GraphExtraction, MentionRecord, RelationRecord
from tests.ingest.test_pipeline import build_ingestor

TEXT = "Atlas uses Redis. Redis stores sessions."
EVIDENCE = "Redis stores sessions."


def test_the_ledger_stores_evidence_and_mentions_document_absolute(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.ensure_collection("hr")
    chunks = [ChunkDraft(0, "Atlas uses Redis.", 0, 17, 5), ChunkDraft(1, EVIDENCE, 18, 40, 5)]
    graph = GraphExtraction(
        entities=(EntityRecord("redis", "Redis", "PRODUCT"), EntityRecord("session", "sessions", "KEYPHRASE")),
        # as extractors give them: offsets into the chunk's own text
        mentions=(MentionRecord("redis", 1, 0, 5), MentionRecord("session", 1, 13, 21)),
        relations=(RelationRecord("redis", "session", "Contains", 0.8, 1, 0, 22),),
    )
    write = ledger.write_document(
        collection="hr", source_uri="/docs/a.md", sha256="a" * 64, mime_type="text/markdown", title="A",
        text=TEXT, size_bytes=len(TEXT), metadata={}, chunks=chunks, graph=graph,
    )  # fmt: skip
    text = ledger.get_document(write.document_id).text
    with ledger.session() as s:
        (relation,) = s.scalars(select(RelationRow)).all()
        mentions = s.execute(select(EntityRow.name, MentionRow.start, MentionRow.end).join(EntityRow)).all()
    assert (relation.evidence_start, relation.evidence_end) == (18, 40)
    assert text[relation.evidence_start : relation.evidence_end] == EVIDENCE
    assert sorted(text[start:end] for _, start, end in mentions) == ["Redis", "sessions"]
    ledger.close()


@pytest.fixture
def ingestor(ledger_url: str, tmp_path: Path, embedder, spacy_extractor) -> Iterator[Ingestor]:
    ing = build_ingestor(tmp_path / "data", ledger_url, embedder, spacy_extractor)
    yield ing
    ing.stores.close()


def test_ingested_relation_evidence_is_the_document_text_at_its_offsets(ingestor: Ingestor, tmp_path: Path) -> None:
    filler = " ".join(f"Paragraph {i} is about nothing in particular." for i in range(12))
    (tmp_path / "platform.md").write_text(
        f"# Platform\n\n{filler}\n\nThe gateway uses Redis.\n\nThe billing service depends on the ledger.\n"
    )
    report = ingestor.ingest([tmp_path / "platform.md"], "hr")
    assert report.status == "completed", report.errors
    (doc,) = ingestor.stores.ledger.documents("hr")
    with ingestor.stores.ledger.session() as s:
        rows = s.execute(
            select(RelationRow.type, RelationRow.evidence_start, RelationRow.evidence_end, ChunkRow).join(
                ChunkRow, ChunkRow.id == RelationRow.chunk_id
            )
        ).all()
        mentions = s.execute(select(MentionRow.start, MentionRow.end, ChunkRow).join(ChunkRow)).all()
    assert rows and mentions
    for _, start, end, chunk in rows:
        # inside its chunk, and the same text whether read from the document or the chunk
        assert chunk.char_start <= start < end <= chunk.char_end
        assert doc.text[start:end] == chunk.text[start - chunk.char_start : end - chunk.char_start]
    for start, end, chunk in mentions:
        assert chunk.char_start <= start < end <= chunk.char_end
    evidence = {kind: doc.text[start:end] for kind, start, end, chunk in rows if chunk.char_start > 0}
    assert evidence.get("Uses") == "The gateway uses Redis."
    assert evidence.get("DependsOn") == "The billing service depends on the ledger."


def _config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def test_migration_0007_converts_chunk_relative_offsets_and_back(ledger_url: str) -> None:
    engine = create_ledger_engine(ledger_url)
    before = ScriptDirectory(str(MIGRATIONS_DIR)).get_revision("0007").down_revision
    assert isinstance(before, str)
    with engine.begin() as conn:
        command.upgrade(_config(conn), before)
        meta = sa.MetaData()
        meta.reflect(conn)
        now = sa.func.now()
        t = meta.tables
        conn.execute(sa.insert(t["collections"]).values(name="hr", description="", created_at=now))
        conn.execute(
            sa.insert(t["documents"]).values(
                id="d1", collection="hr", source_uri="/docs/a.md", sha256="a" * 64, mime_type="text/markdown",
                title="A", version=1, status="indexed", size_bytes=len(TEXT), text=TEXT, metadata={},
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
        for cid, ordinal, start, end in (("c0", 0, 0, 17), ("c1", 1, 18, 40)):
            conn.execute(
                sa.insert(t["chunks"]).values(
                    id=cid, document_id="d1", collection="hr", ordinal=ordinal, text=TEXT[start:end],
                    char_start=start, char_end=end, page=None, heading_path=[], token_count=5,
                )
            )  # fmt: skip
        for eid, name in (("e1", "Redis"), ("e2", "sessions")):
            conn.execute(
                sa.insert(t["entities"]).values(id=eid, collection="hr", key=name.lower(), name=name, label="X")
            )
        # the old layout: offsets into the chunk text
        conn.execute(
            sa.insert(t["mentions"]),
            [
                {"entity_id": "e1", "chunk_id": "c0", "document_id": "d1", "start": 11, "end": 16},
                {"entity_id": "e1", "chunk_id": "c1", "document_id": "d1", "start": 0, "end": 5},
                {"entity_id": "e2", "chunk_id": "c1", "document_id": "d1", "start": 13, "end": 21},
            ],
        )
        conn.execute(
            sa.insert(t["relations"]).values(
                id="r1", collection="hr", source_id="e1", target_id="e2", type="Contains", strength=0.8,
                chunk_id="c1", document_id="d1", evidence_start=0, evidence_end=22, created_at=now,
            )
        )  # fmt: skip
        command.upgrade(_config(conn), "0007")

        def offsets() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
            relations = conn.execute(sa.text("SELECT evidence_start, evidence_end FROM relations")).all()
            mentions = conn.execute(sa.text('SELECT start, "end" FROM mentions ORDER BY id')).all()
            return [tuple(r) for r in relations], [tuple(m) for m in mentions]

        relations, mentions = offsets()
        assert [TEXT[a:b] for a, b in relations] == [EVIDENCE]
        assert [TEXT[a:b] for a, b in mentions] == ["Redis", "Redis", "sessions"]
        assert mentions == [(11, 16), (18, 23), (31, 39)]
        columns = {c["name"] for c in sa.inspect(conn).get_columns("documents")}
        assert {"page_spans", "source_path"} <= columns

        command.downgrade(_config(conn), before)
        assert offsets() == ([(0, 22)], [(11, 16), (0, 5), (13, 21)])
        assert "page_spans" not in {c["name"] for c in sa.inspect(conn).get_columns("documents")}
    engine.dispose()
