"""SQLAlchemy 2 models of the ledger; Alembic migrations in `kag/migrations` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kag.records import PageSpan


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class DocumentStatus:
    INDEXING = "indexing"
    INDEXED = "indexed"
    DELETING = "deleting"


class GraphStatus:
    """A document's stage-2 (knowledge graph) state; NULL when graph extraction is off."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class CollectionRow(Base):
    __tablename__ = "collections"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DocumentRow(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("collection", "source_uri", name="uq_documents_collection_source"),
        Index("ix_documents_status", "status"),
        Index("ix_documents_collection_graph_status", "collection", "graph_status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    collection: Mapped[str] = mapped_column(String(128), ForeignKey("collections.name", ondelete="CASCADE"), index=True)
    source_uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    mime_type: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: stage 2: `pending` until the graph of this version is written, then `done` (or `failed`)
    graph_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    graph_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the ingestion job that wrote this version: a resumed job counts what its crashed attempt wrote
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: [[page, start, end], ...]: `text[start:end]` is that page's text; NULL when the document has no
    #: pages (or was ingested before pages were kept: its citations then use the chunk's page)
    page_spans: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    #: the file's path relative to the folder it was ingested from: what readers are shown instead of
    #: `source_uri` (the identity: the absolute path on the ingesting machine), unless KAG_SOURCE_URI=absolute
    source_path: Mapped[str | None] = mapped_column(Text, nullable=True)

    def shown_source_uri(self, absolute: bool = False) -> str:
        """The source as readers see it: root-relative by default, the stored absolute uri on request."""
        return shown_source_uri(self.source_uri, self.source_path, absolute)

    def pages(self) -> tuple[PageSpan, ...]:
        """The document's page spans, in page order."""
        return tuple(PageSpan(int(n), int(a), int(b)) for n, a, b in self.page_spans or ())


def shown_source_uri(source_uri: str, source_path: str | None, absolute: bool = False) -> str:
    """What to show of a document's source: `source_path`, else (rows written before it was kept) the
    file name, so a relative listing never reveals a server path; `source_uri` itself when `absolute`."""
    if absolute:
        return source_uri
    return source_path or PurePosixPath(source_uri.replace("\\", "/")).name or source_uri


class ChunkRow(Base):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_document_ordinal", "document_id", "ordinal"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(64), ForeignKey("documents.id", ondelete="CASCADE"))
    collection: Mapped[str] = mapped_column(String(128), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heading_path: Mapped[list[Any]] = mapped_column(JSON, default=list)
    token_count: Mapped[int] = mapped_column(Integer)


class EntityRow(Base):
    __tablename__ = "entities"
    __table_args__ = (UniqueConstraint("collection", "key", name="uq_entities_collection_key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    collection: Mapped[str] = mapped_column(String(128), ForeignKey("collections.name", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(32))
    #: the name's embedding (float16 bytes), written once per entity at the end of an ingestion job;
    #: NULL until then, and the retriever embeds the name itself
    name_vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)


class MentionRow(Base):
    __tablename__ = "mentions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_id: Mapped[str] = mapped_column(String(64), ForeignKey("entities.id", ondelete="CASCADE"), index=True)
    chunk_id: Mapped[str] = mapped_column(String(64), ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[str] = mapped_column(String(64), index=True)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)


class RelationRow(Base):
    __tablename__ = "relations"
    __table_args__ = (Index("ix_relations_pair_type", "source_id", "target_id", "type"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    collection: Mapped[str] = mapped_column(String(128), index=True)
    source_id: Mapped[str] = mapped_column(String(64), ForeignKey("entities.id", ondelete="CASCADE"), index=True)
    target_id: Mapped[str] = mapped_column(String(64), ForeignKey("entities.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    strength: Mapped[float] = mapped_column(Float)
    chunk_id: Mapped[str] = mapped_column(String(64), ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[str] = mapped_column(String(64), index=True)
    evidence_start: Mapped[int] = mapped_column(Integer)
    evidence_end: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: evidence grade of the relation (A, B or C, see `kag.ontology`), the same on every row of one
    #: (source, target, type): recomputed when a document stating it is written or deleted
    grade: Mapped[str] = mapped_column(String(1), default="C", server_default="C")
    #: paper, implementation, benchmark or document: from the evidencing document's metadata
    source_kind: Mapped[str] = mapped_column(String(16), default="document", server_default="document")


class IngestJobRow(Base):
    __tablename__ = "ingest_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    collection: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    executor: Mapped[str] = mapped_column(String(16), default="local")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    documents_added: Mapped[int] = mapped_column(Integer, default=0)
    documents_updated: Mapped[int] = mapped_column(Integer, default=0)
    documents_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    documents_failed: Mapped[int] = mapped_column(Integer, default=0)
    documents_deleted: Mapped[int] = mapped_column(Integer, default=0)
    chunks_added: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: who runs the job, and when it last saved progress: a `running` job whose owner died is stale
    owner_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobErrorRow(Base):
    __tablename__ = "job_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("ingest_jobs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRecordRow(Base):
    """One answer's audit record; `kag.audit.AuditLog` chains them by hash in `seq` order."""

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_created_at", "created_at"),
        Index("ix_audit_records_principal", "principal"),
        # AUTOINCREMENT keeps SQLite from reusing the seq of a deleted last record
        {"sqlite_autoincrement": True},
    )

    # BIGINT on PostgreSQL; SQLite only autoincrements a column declared exactly INTEGER
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    principal: Mapped[str] = mapped_column(Text)
    collections: Mapped[list[Any]] = mapped_column(JSON)
    # ",hr,legal," (names percent-encoded): a LIKE filter on it works the same on SQLite and PostgreSQL
    collections_key: Mapped[str] = mapped_column(Text)
    question: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    # unique: two records that follow the same record are a fork, which the database then refuses
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class ApiKeyRow(Base):
    """An API key of the service: only the sha256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # sha256 hex of the whole secret; keys are 256-bit random, so a fast hash cannot be brute-forced
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    # collection names the key may use; ["*"] = every collection
    collections: Mapped[list[Any]] = mapped_column(JSON)
    default_collection: Mapped[str | None] = mapped_column(String(128), nullable=True)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
