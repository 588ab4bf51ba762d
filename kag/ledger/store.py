"""The ledger's operations: every write the ingestion path makes goes through here."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, bindparam, case, create_engine, delete, event, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, defer, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from kag import ids
from kag.errors import NotFoundError, StoreError
from kag.ledger.grades import regrade, triples_of_document
from kag.ledger.models import (
    ChunkRow,
    CollectionRow,
    DocumentRow,
    DocumentStatus,
    EntityRow,
    GraphStatus,
    IngestJobRow,
    JobErrorRow,
    JobStatus,
    MentionRow,
    RelationRow,
    utcnow,
)
from kag.ontology import DocumentEvidence, best_grade, document_evidence, row_grade, winning_links
from kag.records import ChunkDraft, GraphExtraction, IndexedChunk, PageSpan

#: a `running` job whose owner's heartbeat is older than this, on another host, is stale by default
DEFAULT_STALE_SECONDS = 600.0

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """The result of writing a document version into the ledger."""

    document_id: str
    version: int
    chunks: tuple[IndexedChunk, ...]


@dataclass(frozen=True, slots=True)
class PendingGraph:
    """A document version waiting for stage 2 (graph extraction)."""

    document_id: str
    version: int
    source_uri: str


def _this_host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return False
    return True


def _enable_sqlite_fks(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # foreign keys make ON DELETE CASCADE work; WAL lets readers run beside the one writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_ledger_engine(url: str) -> Engine:
    """An engine for the ledger URL, with SQLite tuned for crash safety and cascades."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _enable_sqlite_fks)
        return engine
    return create_engine(url, pool_pre_ping=True)


def run_migrations(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


class Ledger:
    """Typed access to the ledger tables."""

    def __init__(self, url: str, *, migrate: bool = True, grade_floors: Mapping[str, str] | None = None) -> None:
        self.url = url
        # collection -> lowest grade of its relations (settings: KAG_GRAPH_GRADE_FLOORS)
        self.grade_floors = dict(grade_floors or {})
        try:
            self.engine = create_ledger_engine(url)
            if migrate:
                run_migrations(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open the ledger at {self.safe_url}: {exc.__class__.__name__}: {exc}",
                hint="check KAG_DATABASE_URL and that the database is reachable",
            ) from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") else self.url

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # --- collections ---------------------------------------------------------------------
    def ensure_collection(self, name: str, description: str = "") -> None:
        with self.session() as s:
            if s.get(CollectionRow, name) is None:
                s.add(CollectionRow(name=name, description=description))

    def collections(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(CollectionRow.name).order_by(CollectionRow.name)))

    def collection_rows(self) -> list[CollectionRow]:
        with self.session() as s:
            return list(s.scalars(select(CollectionRow).order_by(CollectionRow.name)))

    def delete_collection(self, name: str) -> None:
        with self.session() as s:
            s.execute(delete(RelationRow).where(RelationRow.collection == name))
            s.execute(delete(ChunkRow).where(ChunkRow.collection == name))
            s.execute(delete(CollectionRow).where(CollectionRow.name == name))

    # --- documents -----------------------------------------------------------------------
    def find_document(self, collection: str, source_uri: str) -> DocumentRow | None:
        with self.session() as s:
            return s.scalar(
                select(DocumentRow).where(DocumentRow.collection == collection, DocumentRow.source_uri == source_uri)
            )

    def document_states(
        self, collection: str, source_uris: Sequence[str]
    ) -> dict[str, tuple[str, str, str | None, str | None, int]]:
        """source uri -> (sha256, status, ingestion fingerprint, writing job id, version): what ingestion
        needs to skip an unchanged file, for many files in one query and without loading document text."""
        found: dict[str, tuple[str, str, str | None, str | None, int]] = {}
        uris = list(dict.fromkeys(source_uris))
        with self.session() as s:
            for start in range(0, len(uris), 1000):
                rows = s.execute(
                    select(
                        DocumentRow.source_uri,
                        DocumentRow.sha256,
                        DocumentRow.status,
                        DocumentRow.meta,
                        DocumentRow.job_id,
                        DocumentRow.version,
                    ).where(
                        DocumentRow.collection == collection, DocumentRow.source_uri.in_(uris[start : start + 1000])
                    )
                ).all()
                for uri, sha, status, meta, job_id, version in rows:
                    found[uri] = (sha, status, (meta or {}).get("_kag_fingerprint"), job_id, version)
        return found

    def get_document(self, document_id: str) -> DocumentRow:
        with self.session() as s:
            row = s.get(DocumentRow, document_id)
        if row is None:
            raise NotFoundError(f"no document with id {document_id}", hint="list documents with `kag documents`")
        return row

    def documents(self, collection: str | None = None, status: str | None = None) -> list[DocumentRow]:
        query = select(DocumentRow).order_by(DocumentRow.collection, DocumentRow.source_uri)
        if collection is not None:
            query = query.where(DocumentRow.collection == collection)
        if status is not None:
            query = query.where(DocumentRow.status == status)
        with self.session() as s:
            return list(s.scalars(query))

    def document_page(
        self, collections: Collection[str], *, limit: int = 100, offset: int = 0
    ) -> tuple[list[DocumentRow], int]:
        """One page of documents in `collections` (their text not loaded) and how many there are in all."""
        where = DocumentRow.collection.in_(list(collections))
        query = (
            select(DocumentRow)
            .options(defer(DocumentRow.text))
            .where(where)
            .order_by(DocumentRow.collection, DocumentRow.source_uri)
            .limit(limit)
            .offset(offset)
        )
        with self.session() as s:
            rows = list(s.scalars(query))
            total = int(s.scalar(select(func.count()).select_from(DocumentRow).where(where)) or 0)
        return rows, total

    def collection_stats(self, collections: Collection[str]) -> dict[str, tuple[int, int]]:
        """(documents, chunks) per collection."""
        names = list(collections)
        with self.session() as s:
            docs = dict(
                s.execute(
                    select(DocumentRow.collection, func.count())
                    .where(DocumentRow.collection.in_(names))
                    .group_by(DocumentRow.collection)
                ).all()
            )
            chunks = dict(
                s.execute(
                    select(ChunkRow.collection, func.count())
                    .where(ChunkRow.collection.in_(names))
                    .group_by(ChunkRow.collection)
                ).all()
            )
        return {n: (int(docs.get(n, 0)), int(chunks.get(n, 0))) for n in names}

    def write_document(
        self,
        *,
        collection: str,
        source_uri: str,
        sha256: str,
        mime_type: str,
        title: str,
        text: str,
        size_bytes: int,
        metadata: dict[str, Any],
        chunks: Sequence[ChunkDraft],
        graph: GraphExtraction | None = None,
        graph_pending: bool = False,
        job_id: str | None = None,
        pages: Sequence[PageSpan] = (),
        source_path: str | None = None,
    ) -> DocumentWrite:
        """Write a new version of a document and its chunks in one transaction, status `indexing`.

        With `graph` its graph goes in the same transaction (graph status `done`); without, the
        version waits for stage 2 (`pending`) when `graph_pending`, else has no graph (NULL).
        `pages` are the document's page spans; `source_path` is what readers are shown of `source_uri`.
        Graph offsets arrive relative to their chunk's text and are stored relative to the document's."""
        doc_id = ids.document_id(collection, source_uri)
        evidence = document_evidence(metadata)  # a bad source_kind or grade fails before any write
        floor = self.grade_floors.get(collection)
        evidence = replace(evidence, grade_floor=best_grade(evidence.grade_floor, floor)) if floor else evidence
        replaced: set[str] = set()
        regraded: set[tuple[str, str, str]] = set()
        with self.session() as s:
            row = s.get(DocumentRow, doc_id)
            if row is None:
                version = 1
                row = DocumentRow(id=doc_id, collection=collection, source_uri=source_uri, created_at=utcnow())
                s.add(row)
            else:
                version = row.version + 1
                regraded = triples_of_document(s, doc_id)
                replaced = self._delete_document_children(s, doc_id)
            row.sha256, row.mime_type, row.title, row.text = sha256, mime_type, title, text
            row.size_bytes, row.meta, row.version = size_bytes, metadata, version
            row.status, row.updated_at = DocumentStatus.INDEXING, utcnow()
            row.page_spans = [[p.number, p.start, p.end] for p in sorted(pages, key=lambda p: p.start)] or None
            row.source_path = source_path
            row.graph_error, row.job_id = None, job_id
            if graph is not None:
                row.graph_status = GraphStatus.DONE
            else:
                row.graph_status = GraphStatus.PENDING if graph_pending else None
            s.flush()

            chunk_ids = [ids.chunk_id(collection, doc_id, version, c.ordinal, c.text) for c in chunks]
            s.add_all(
                ChunkRow(
                    id=cid,
                    document_id=doc_id,
                    collection=collection,
                    ordinal=c.ordinal,
                    text=c.text,
                    char_start=c.char_start,
                    char_end=c.char_end,
                    page=c.page,
                    heading_path=list(c.heading_path),
                    token_count=c.token_count,
                )
                for cid, c in zip(chunk_ids, chunks, strict=True)
            )
            s.flush()
            written = self._write_graph(
                s, collection, doc_id, chunk_ids, [c.char_start for c in chunks], graph or GraphExtraction(), evidence
            )
            # the grades of what this version states, and of what only the old version stated
            regrade(s, collection, regraded | triples_of_document(s, doc_id), floor)
            # entities only the old version mentioned, in the same transaction: a crash leaves none behind
            self._delete_orphan_entities(s, collection, replaced - written)
        indexed = tuple(
            IndexedChunk(chunk_id=cid, document_id=doc_id, collection=collection, text=c.text, title=title)
            for cid, c in zip(chunk_ids, chunks, strict=True)
        )
        return DocumentWrite(doc_id, version, indexed)

    def _write_graph(
        self,
        s: Session,
        collection: str,
        doc_id: str,
        chunk_ids: Sequence[str] | Mapping[int, str],
        chunk_starts: Sequence[int] | Mapping[int, int],
        graph: GraphExtraction,
        evidence: DocumentEvidence | None = None,
    ) -> set[str]:
        """Insert the document's entities (if new), mentions and relations; the ids of the entities it mentions.

        Mention and evidence offsets are stored document-absolute (chunk-relative + the chunk's start), like
        every other offset of the ledger: `document.text[evidence_start:evidence_end]` is the evidence."""
        if not graph.entities:
            return set()
        entity_ids = {e.key: ids.entity_id(collection, e.key) for e in graph.entities}
        values = [
            {"id": entity_ids[e.key], "collection": collection, "key": e.key, "name": e.name, "label": e.label}
            for e in graph.entities
        ]
        upsert = postgresql.insert if s.bind.dialect.name == "postgresql" else sqlite.insert  # type: ignore[union-attr]
        s.execute(upsert(EntityRow).values(values).on_conflict_do_nothing())
        # mentions and relations go in as one bulk INSERT each (executemany), not as ORM objects:
        # a document has hundreds of them and the unit of work cost more than the rows themselves
        mentions = [
            {
                "entity_id": entity_ids[m.entity_key],
                "chunk_id": chunk_ids[m.chunk_ordinal],
                "document_id": doc_id,
                "start": chunk_starts[m.chunk_ordinal] + m.start,
                "end": chunk_starts[m.chunk_ordinal] + m.end,
            }
            for m in graph.mentions
            if m.entity_key in entity_ids
        ]
        if mentions:
            s.execute(insert(MentionRow), mentions)
        relations: dict[str, dict[str, Any]] = {}
        now = utcnow()
        evidence = evidence or DocumentEvidence()
        for r in graph.relations:
            if r.source_key not in entity_ids or r.target_key not in entity_ids:
                continue
            cid, base = chunk_ids[r.chunk_ordinal], chunk_starts[r.chunk_ordinal]
            # the id keeps the chunk-relative start: ids written before offsets became absolute still hold
            rid = ids.relation_id(collection, r.source_key, r.type, r.target_key, cid, r.evidence_start)
            relations.setdefault(
                rid,
                {
                    "id": rid,
                    "collection": collection,
                    "source_id": entity_ids[r.source_key],
                    "target_id": entity_ids[r.target_key],
                    "type": r.type,
                    "strength": r.strength,
                    "chunk_id": cid,
                    "document_id": doc_id,
                    "evidence_start": base + r.evidence_start,
                    "evidence_end": base + r.evidence_end,
                    "created_at": now,
                    "grade": row_grade(r.type, r.strength, evidence),
                    "source_kind": evidence.source_kind,
                },
            )
        if relations:
            s.execute(insert(RelationRow), list(relations.values()))
        mentioned = {entity_ids[m.entity_key] for m in graph.mentions if m.entity_key in entity_ids}
        # an entity the extractor named but nothing mentions would be an orphan from the start
        self._delete_orphan_entities(s, collection, set(entity_ids.values()) - mentioned)
        return mentioned

    @staticmethod
    def _delete_document_children(s: Session, doc_id: str) -> set[str]:
        """Delete a document's relations, mentions and chunks; the ids of the entities it mentioned."""
        mentioned = set(s.scalars(select(MentionRow.entity_id).where(MentionRow.document_id == doc_id).distinct()))
        s.execute(delete(RelationRow).where(RelationRow.document_id == doc_id))
        s.execute(delete(MentionRow).where(MentionRow.document_id == doc_id))
        s.execute(delete(ChunkRow).where(ChunkRow.document_id == doc_id))
        return mentioned

    @staticmethod
    def _delete_orphan_entities(s: Session, collection: str, entity_ids: Collection[str]) -> None:
        """Delete those of `entity_ids` in the collection that no chunk mentions any more.

        Callers pass the entities whose mentions they just removed, so the cost follows the document,
        not the collection (a collection-wide sweep scanned every mention of every document)."""
        unmentioned = ~select(MentionRow.id).where(MentionRow.entity_id == EntityRow.id).exists()
        query = delete(EntityRow).where(EntityRow.collection == collection, unmentioned)
        ordered = sorted(entity_ids)
        for start in range(0, len(ordered), 1000):
            s.execute(
                query.where(EntityRow.id.in_(ordered[start : start + 1000])),
                execution_options={"synchronize_session": False},
            )

    def mark_indexed(self, document_ids: Sequence[str]) -> None:
        """Flip documents to `indexed` once every index holds them (orphan entities go with the writes that
        orphan them, in `write_document` and `delete_document`)."""
        if not document_ids:
            return
        with self.session() as s:
            s.execute(
                update(DocumentRow).where(DocumentRow.id.in_(list(document_ids))).values(status=DocumentStatus.INDEXED)
            )

    # --- stage 2: the graph ----------------------------------------------------------------
    def graph_pending(self, collection: str) -> list[PendingGraph]:
        """The collection's indexed documents whose graph is still to be extracted, in source order."""
        with self.session() as s:
            rows = s.execute(
                select(DocumentRow.id, DocumentRow.version, DocumentRow.source_uri)
                .where(
                    DocumentRow.collection == collection,
                    DocumentRow.graph_status == GraphStatus.PENDING,
                    DocumentRow.status == DocumentStatus.INDEXED,
                )
                .order_by(DocumentRow.source_uri)
            ).all()
        return [PendingGraph(r[0], r[1], r[2]) for r in rows]

    def graph_input(self, document_id: str) -> tuple[int, list[ChunkDraft], dict[int, str]]:
        """(version, chunks as drafts, ordinal -> chunk id) of a document, read together; version 0 when
        the document is gone."""
        with self.session() as s:
            version = s.scalar(select(DocumentRow.version).where(DocumentRow.id == document_id))
            rows = list(
                s.scalars(select(ChunkRow).where(ChunkRow.document_id == document_id).order_by(ChunkRow.ordinal))
            )
        drafts = [
            ChunkDraft(
                ordinal=r.ordinal,
                text=r.text,
                char_start=r.char_start,
                char_end=r.char_end,
                token_count=r.token_count,
                page=r.page,
                heading_path=tuple(r.heading_path or ()),
            )
            for r in rows
        ]
        return int(version or 0), drafts, {r.ordinal: r.id for r in rows}

    def _lock_version(self, s: Session, document_id: str, version: int) -> DocumentRow | None:
        """The document row, locked until the transaction ends, if it is still at `version`."""
        row = s.scalar(select(DocumentRow).where(DocumentRow.id == document_id).with_for_update())
        if row is None or row.version != version or row.status == DocumentStatus.DELETING:
            return None
        return row

    def write_graph(self, document_id: str, version: int, chunk_ids: Mapping[int, str], graph: GraphExtraction) -> bool:
        """Write a document version's graph and mark it `done`, in one transaction; False (and nothing
        written) when the document was rewritten or deleted since `version` was read."""
        with self.session() as s:
            row = self._lock_version(s, document_id, version)
            if row is None:
                return False
            # a graph from an earlier run of this version (none, normally: it is written only here)
            replaced = set(
                s.scalars(select(MentionRow.entity_id).where(MentionRow.document_id == document_id).distinct())
            )
            regraded = triples_of_document(s, document_id)
            s.execute(delete(RelationRow).where(RelationRow.document_id == document_id))
            s.execute(delete(MentionRow).where(MentionRow.document_id == document_id))
            chunk_rows = select(ChunkRow.ordinal, ChunkRow.char_start).where(ChunkRow.document_id == document_id)
            starts = {int(o): int(c) for o, c in s.execute(chunk_rows).all()}
            evidence = document_evidence(row.meta or {})  # checked when the version was written
            floor = self.grade_floors.get(row.collection)
            evidence = replace(evidence, grade_floor=best_grade(evidence.grade_floor, floor)) if floor else evidence
            written = self._write_graph(s, row.collection, document_id, chunk_ids, starts, graph, evidence)
            regrade(s, row.collection, regraded | triples_of_document(s, document_id), floor)
            self._delete_orphan_entities(s, row.collection, replaced - written)
            row.graph_status, row.graph_error = GraphStatus.DONE, None
        return True

    def mark_graph_failed(self, document_id: str, version: int, reason: str) -> bool:
        """Record why a document version's graph could not be extracted; False when it changed meanwhile."""
        with self.session() as s:
            row = self._lock_version(s, document_id, version)
            if row is None:
                return False
            row.graph_status, row.graph_error = GraphStatus.FAILED, reason[:2000]
        return True

    def graph_status_counts(self, collection: str | None = None) -> dict[str, int]:
        """Documents per graph status (`pending`, `done`, `failed`; `off` for those without a graph)."""
        query = select(DocumentRow.graph_status, func.count()).group_by(DocumentRow.graph_status)
        if collection is not None:
            query = query.where(DocumentRow.collection == collection)
        with self.session() as s:
            rows = s.execute(query).all()
        counts = {GraphStatus.PENDING: 0, GraphStatus.DONE: 0, GraphStatus.FAILED: 0}
        for status, n in rows:
            counts[status or "off"] = counts.get(status or "off", 0) + int(n)
        return counts

    def graph_counts_by_job(self, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """job id -> documents it wrote per graph status: the stage-2 progress of each job."""
        found: dict[str, dict[str, int]] = {
            j: {GraphStatus.PENDING: 0, GraphStatus.DONE: 0, GraphStatus.FAILED: 0} for j in job_ids
        }
        if not job_ids:
            return found
        with self.session() as s:
            rows = s.execute(
                select(DocumentRow.job_id, DocumentRow.graph_status, func.count())
                .where(DocumentRow.job_id.in_(list(job_ids)), DocumentRow.graph_status.is_not(None))
                .group_by(DocumentRow.job_id, DocumentRow.graph_status)
            ).all()
        for job_id, status, n in rows:
            if job_id is not None and status is not None:
                found[job_id][status] = int(n)
        return found

    def graph_failures(self, collection: str | None = None, limit: int = 20) -> list[tuple[str, str, str]]:
        """(document id, source, reason) of documents whose graph failed."""
        query = select(DocumentRow.id, DocumentRow.source_uri, DocumentRow.graph_error).where(
            DocumentRow.graph_status == GraphStatus.FAILED
        )
        if collection is not None:
            query = query.where(DocumentRow.collection == collection)
        with self.session() as s:
            rows = s.execute(query.order_by(DocumentRow.source_uri).limit(limit)).all()
        return [(r[0], r[1], r[2] or "") for r in rows]

    def retry_graph_failures(self, collection: str) -> int:
        """Put a collection's `failed` documents back to `pending` (`kag graph build --retry-failed`)."""
        with self.session() as s:
            result = s.execute(
                update(DocumentRow)
                .where(DocumentRow.collection == collection, DocumentRow.graph_status == GraphStatus.FAILED)
                .values(graph_status=GraphStatus.PENDING, graph_error=None)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def chunk_count(self, document_id: str) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).where(ChunkRow.document_id == document_id)) or 0)

    def mark_deleting(self, document_id: str) -> None:
        with self.session() as s:
            s.execute(update(DocumentRow).where(DocumentRow.id == document_id).values(status=DocumentStatus.DELETING))

    def delete_document(self, document_id: str) -> None:
        """Remove a document and everything derived from it from the ledger."""
        with self.session() as s:
            row = s.get(DocumentRow, document_id)
            if row is None:
                return
            stated = triples_of_document(s, document_id)
            mentioned = self._delete_document_children(s, document_id)
            s.delete(row)
            s.flush()
            # what other documents still state drops back (A -> B)
            regrade(s, row.collection, stated, self.grade_floors.get(row.collection))
            self._delete_orphan_entities(s, row.collection, mentioned)

    # --- chunks --------------------------------------------------------------------------
    def chunk_ids(self, collection: str | None = None) -> set[str]:
        query = select(ChunkRow.id)
        if collection is not None:
            query = query.where(ChunkRow.collection == collection)
        with self.session() as s:
            return set(s.scalars(query))

    def chunks_of(self, document_id: str) -> list[ChunkRow]:
        with self.session() as s:
            return list(
                s.scalars(select(ChunkRow).where(ChunkRow.document_id == document_id).order_by(ChunkRow.ordinal))
            )

    def indexed_chunks_of(self, document_id: str) -> list[IndexedChunk]:
        with self.session() as s:
            rows = s.execute(
                select(ChunkRow.id, ChunkRow.collection, ChunkRow.text, DocumentRow.title)
                .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
                .where(ChunkRow.document_id == document_id)
                .order_by(ChunkRow.ordinal)
            ).all()
        return [IndexedChunk(r.id, document_id, r.collection, r.text, r.title) for r in rows]

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, tuple[ChunkRow, DocumentRow]]:
        """Chunk rows with their document rows, keyed by chunk id (missing ids are left out)."""
        ids = list(dict.fromkeys(chunk_ids))
        found: dict[str, tuple[ChunkRow, DocumentRow]] = {}
        with self.session() as s:
            # in slices: SQLite refuses a statement with more than 32,766 bound values
            for start in range(0, len(ids), 1000):
                rows = s.execute(
                    select(ChunkRow, DocumentRow)
                    .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
                    .where(ChunkRow.id.in_(ids[start : start + 1000]))
                ).all()
                found.update((c.id, (c, d)) for c, d in rows)
        return found

    def count_chunks(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(ChunkRow)) or 0)

    # --- graph ---------------------------------------------------------------------------
    @staticmethod
    def _entities_with_mention_counts(s: Session, collection: str) -> list[Any]:
        """(id, key, name, label, mentions) of the collection's entities."""
        counts = (
            select(MentionRow.entity_id, func.count().label("n"))
            .join(EntityRow, EntityRow.id == MentionRow.entity_id)
            .where(EntityRow.collection == collection)
            .group_by(MentionRow.entity_id)
            .subquery()
        )
        rows = s.execute(
            select(EntityRow.id, EntityRow.key, EntityRow.name, EntityRow.label, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.entity_id == EntityRow.id)
            .where(EntityRow.collection == collection)
        ).all()
        return [tuple(r) for r in rows]

    def graph_rows(self, collection: str) -> tuple[list[Any], list[Any]]:
        """(entities with mention counts, relations) of one collection."""
        with self.session() as s:
            entities = self._entities_with_mention_counts(s, collection)
            relations = s.execute(
                select(
                    RelationRow.id,
                    RelationRow.source_id,
                    RelationRow.target_id,
                    RelationRow.type,
                    RelationRow.strength,
                    RelationRow.chunk_id,
                    RelationRow.evidence_start,
                    RelationRow.evidence_end,
                    RelationRow.created_at,
                ).where(RelationRow.collection == collection)
            ).all()
        return entities, [tuple(r) for r in relations]

    def graph_links(self, collection: str) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """(entities with mention counts, links, mentions, name vectors) of one collection, for retrieval.

        A link is (source id, target id, strongest strength) over the relations between the two that
        win any conflict (higher grade, then newer: `kag.ontology.resolve`), aggregated per type by
        the database instead of shipping every relation row (a corpus repeats the
        same pairs many times); a mention is (entity id, chunk id, document id); a name vector is
        (entity id, float16 bytes), for the entities whose names have been embedded."""
        with self.session() as s:
            entities = self._entities_with_mention_counts(s, collection)
            # per type, so a relation that loses a conflict (kag.ontology.OPPOSING_TYPES) is left out
            typed = s.execute(
                select(
                    RelationRow.source_id,
                    RelationRow.target_id,
                    RelationRow.type,
                    func.max(RelationRow.strength),
                    func.min(RelationRow.grade),
                    func.max(RelationRow.created_at),
                )
                .where(RelationRow.collection == collection)
                .group_by(RelationRow.source_id, RelationRow.target_id, RelationRow.type)
            ).all()
            links = winning_links((r[0], r[1], r[2], float(r[3]), r[4], r[5]) for r in typed)
            mentions = s.execute(
                select(MentionRow.entity_id, MentionRow.chunk_id, MentionRow.document_id)
                .join(EntityRow, EntityRow.id == MentionRow.entity_id)
                .where(EntityRow.collection == collection)
            ).all()
            vectors = s.execute(
                select(EntityRow.id, EntityRow.name_vector).where(
                    EntityRow.collection == collection, EntityRow.name_vector.is_not(None)
                )
            ).all()
        return entities, [tuple(r) for r in links], [tuple(m) for m in mentions], [tuple(v) for v in vectors]

    def entities_without_vectors(self, collection: str, vector_bytes: int | None = None) -> list[tuple[str, str]]:
        """(id, name) of the collection's entities whose names have not been embedded yet, or (with
        `vector_bytes`) whose stored vector has another size: one from another name embedder."""
        missing: ColumnElement[bool] = EntityRow.name_vector.is_(None)
        if vector_bytes is not None:
            missing = or_(missing, func.length(EntityRow.name_vector) != vector_bytes)
        with self.session() as s:
            rows = s.execute(
                select(EntityRow.id, EntityRow.name)
                .where(EntityRow.collection == collection, missing)
                .order_by(EntityRow.id)
            ).all()
        return [(r[0], r[1]) for r in rows]

    def vectors_by_name(self, collection: str, names: Collection[str], vector_bytes: int) -> dict[str, bytes]:
        """Stored name vectors of `vector_bytes` bytes of the collection's entities named `names`, by name:
        another entity with the same name (another key) needs no embedding of its own."""
        found: dict[str, bytes] = {}
        ordered = sorted(set(names))
        with self.session() as s:
            for start in range(0, len(ordered), 1000):
                rows = s.execute(
                    select(EntityRow.name, EntityRow.name_vector).where(
                        EntityRow.collection == collection,
                        EntityRow.name.in_(ordered[start : start + 1000]),
                        func.length(EntityRow.name_vector) == vector_bytes,
                    )
                ).all()
                found.update((r[0], r[1]) for r in rows if r[1] is not None)
        return found

    def set_entity_vectors(self, vectors: Mapping[str, bytes]) -> None:
        """Store name vectors by entity id (ids deleted meanwhile are skipped)."""
        if not vectors:
            return
        with self.session() as s:
            table = EntityRow.__table__
            assert isinstance(table, Table)
            s.execute(  # a Core executemany: one statement, every row
                update(table).where(table.c.id == bindparam("entity_id")).values(name_vector=bindparam("vector")),
                [{"entity_id": e, "vector": v} for e, v in vectors.items()],
            )

    def clear_entity_vectors(self, collection: str | None = None) -> None:
        """Forget stored name vectors (after the embedding model changed), of one collection or all."""
        with self.session() as s:
            query = update(EntityRow).values(name_vector=None)
            if collection is not None:
                query = query.where(EntityRow.collection == collection)
            s.execute(query, execution_options={"synchronize_session": False})

    def document_ids_matching(
        self,
        collections: Sequence[str],
        *,
        document_ids: Sequence[str] | None = None,
        source_prefix: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> set[str]:
        """Ids of documents in `collections` that pass metadata filters (id, source prefix, update time)."""
        query = select(DocumentRow.id).where(DocumentRow.collection.in_(list(collections)))
        if document_ids is not None:
            query = query.where(DocumentRow.id.in_(list(document_ids)))
        if source_prefix:
            # readers see root-relative paths (KAG_SOURCE_URI), so a prefix of either form selects
            query = query.where(
                or_(
                    DocumentRow.source_uri.startswith(source_prefix, autoescape=True),
                    DocumentRow.source_path.startswith(source_prefix, autoescape=True),
                )
            )
        if since is not None:
            query = query.where(DocumentRow.updated_at >= since)
        if until is not None:
            query = query.where(DocumentRow.updated_at <= until)
        with self.session() as s:
            return set(s.scalars(query))

    def graph_stamp(self, collection: str) -> tuple[int, str, int]:
        """(documents, latest document update, documents with a finished graph) of a collection: changes
        whenever its graph may have changed (stage 2 finishing a document changes the third)."""
        done = func.sum(case((DocumentRow.graph_status == GraphStatus.DONE, 1), else_=0))
        with self.session() as s:
            row = s.execute(
                select(func.count(), func.max(DocumentRow.updated_at), done).where(DocumentRow.collection == collection)
            ).one()
        return int(row[0] or 0), str(row[1] or ""), int(row[2] or 0)

    def graph_counts(self, collection: str | None = None) -> tuple[int, int]:
        with self.session() as s:
            eq = select(func.count()).select_from(EntityRow)
            rq = select(func.count()).select_from(RelationRow)
            if collection is not None:
                eq = eq.where(EntityRow.collection == collection)
                rq = rq.where(RelationRow.collection == collection)
            return int(s.scalar(eq) or 0), int(s.scalar(rq) or 0)

    def document_graph_counts(self, document_id: str) -> tuple[int, int, int]:
        """(distinct entities mentioned, mentions, relations) the graph extraction found in one document."""
        with self.session() as s:
            entities, mentions = s.execute(
                select(func.count(func.distinct(MentionRow.entity_id)), func.count()).where(
                    MentionRow.document_id == document_id
                )
            ).one()
            relations = s.scalar(
                select(func.count()).select_from(RelationRow).where(RelationRow.document_id == document_id)
            )
        return int(entities or 0), int(mentions or 0), int(relations or 0)

    # --- jobs ----------------------------------------------------------------------------
    def create_job(self, job_id: str, collection: str, params: dict[str, Any], executor: str = "local") -> None:
        """Start a job as `running`; a queued or interrupted job with this id starts over (resume)."""
        with self.session() as s:
            row = s.get(IngestJobRow, job_id)
            if row is None:
                s.add(
                    IngestJobRow(
                        id=job_id,
                        collection=collection,
                        status=JobStatus.RUNNING,
                        params=params,
                        executor=executor,
                        owner_host=_this_host(),
                        owner_pid=os.getpid(),
                        heartbeat_at=utcnow(),
                    )
                )
                return
            # a resumed run reports every file again (unchanged ones as unchanged), so counts restart
            s.execute(delete(JobErrorRow).where(JobErrorRow.job_id == job_id))
            row.status, row.error, row.finished_at, row.started_at = JobStatus.RUNNING, None, None, utcnow()
            row.owner_host, row.owner_pid, row.heartbeat_at = _this_host(), os.getpid(), utcnow()
            row.params = {**(row.params or {}), **params}
            for name in (
                "files_total",
                "files_done",
                "documents_added",
                "documents_updated",
                "documents_unchanged",
                "documents_failed",
                "documents_deleted",
                "chunks_added",
            ):
                setattr(row, name, 0)

    def queue_job(self, job_id: str, collection: str, params: dict[str, Any], executor: str = "local") -> None:
        """Record a job that waits for a worker (status `queued`); `create_job` later starts it."""
        with self.session() as s:
            s.add(
                IngestJobRow(
                    id=job_id, collection=collection, status=JobStatus.QUEUED, params=params, executor=executor
                )
            )

    def update_job(self, job_id: str, **counts: int) -> None:
        """Save a job's counts; also its heartbeat, which tells a live job from a stale one."""
        with self.session() as s:
            s.execute(update(IngestJobRow).where(IngestJobRow.id == job_id).values(**counts, heartbeat_at=utcnow()))

    def add_job_error(self, job_id: str, path: str, code: str, message: str) -> None:
        with self.session() as s:
            s.add(JobErrorRow(job_id=job_id, path=path, code=code, message=message))

    def finish_job(self, job_id: str, status: str, error: str | None = None) -> None:
        with self.session() as s:
            s.execute(
                update(IngestJobRow)
                .where(IngestJobRow.id == job_id)
                .values(status=status, error=error, finished_at=utcnow())
            )

    def interrupt_running_jobs(self) -> int:
        """Mark jobs left `running` by a crashed process as `interrupted`."""
        with self.session() as s:
            result = s.execute(
                update(IngestJobRow)
                .where(IngestJobRow.status == JobStatus.RUNNING)
                .values(status=JobStatus.INTERRUPTED, finished_at=utcnow())
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def stale_jobs(self, stale_seconds: float = DEFAULT_STALE_SECONDS) -> list[IngestJobRow]:
        """`running` jobs whose owner is gone: on this host a dead pid; elsewhere (or with no owner
        recorded) no heartbeat for `stale_seconds`."""
        cutoff = utcnow() - timedelta(seconds=stale_seconds)
        host = _this_host()
        with self.session() as s:
            rows = list(s.scalars(select(IngestJobRow).where(IngestJobRow.status == JobStatus.RUNNING)))
        stale = []
        for row in rows:
            if row.owner_host == host and row.owner_pid is not None:
                if not _pid_alive(row.owner_pid):
                    stale.append(row)
                continue
            beat = row.heartbeat_at
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=UTC)
            if beat is None or beat < cutoff:
                stale.append(row)
        return stale

    def interrupt_stale_jobs(self, stale_seconds: float = DEFAULT_STALE_SECONDS) -> int:
        """Mark the stale `running` jobs (see `stale_jobs`) `interrupted`; live ones are left alone."""
        ids_ = [row.id for row in self.stale_jobs(stale_seconds)]
        if not ids_:
            return 0
        with self.session() as s:
            result = s.execute(
                update(IngestJobRow)
                .where(IngestJobRow.id.in_(ids_), IngestJobRow.status == JobStatus.RUNNING)
                .values(status=JobStatus.INTERRUPTED, finished_at=utcnow())
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def get_job(self, job_id: str) -> tuple[IngestJobRow, list[JobErrorRow]]:
        with self.session() as s:
            job = s.get(IngestJobRow, job_id)
            if job is None:
                raise NotFoundError(f"no ingest job with id {job_id}")
            errors = list(s.scalars(select(JobErrorRow).where(JobErrorRow.job_id == job_id).order_by(JobErrorRow.id)))
        return job, errors

    def jobs(
        self,
        limit: int = 20,
        *,
        collections: Collection[str] | None = None,
        statuses: Collection[str] | None = None,
        offset: int = 0,
    ) -> list[IngestJobRow]:
        """Jobs newest first, optionally of some collections and statuses."""
        query = select(IngestJobRow)
        if collections is not None:
            query = query.where(IngestJobRow.collection.in_(list(collections)))
        if statuses is not None:
            query = query.where(IngestJobRow.status.in_(list(statuses)))
        query = query.order_by(IngestJobRow.started_at.desc(), IngestJobRow.id).limit(limit).offset(offset)
        with self.session() as s:
            return list(s.scalars(query))

    def delete_jobs(self, collection: str) -> None:
        """Remove a collection's finished job records and their per-file errors."""
        with self.session() as s:
            s.execute(delete(IngestJobRow).where(IngestJobRow.collection == collection))
