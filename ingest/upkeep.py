"""`kag doctor` and `kag reindex`: compare the indexes with the ledger, and rebuild them from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kag.ledger.models import DocumentStatus, GraphStatus
from kag.ledger.store import DEFAULT_STALE_SECONDS
from kag.records import IndexedChunk
from kag.stores.bundle import Stores
from kag.stores.graph import embed_entity_names

if TYPE_CHECKING:
    from ingest.pipeline import Ingestor


@dataclass
class CollectionHealth:
    """Drift between the ledger and each index for one collection."""

    collection: str
    ledger_chunks: int
    vector_chunks: int
    fulltext_chunks: int
    missing_in_vectors: list[str] = field(default_factory=list)
    orphans_in_vectors: list[str] = field(default_factory=list)
    missing_in_fulltext: list[str] = field(default_factory=list)
    orphans_in_fulltext: list[str] = field(default_factory=list)
    entities: int = 0
    relations: int = 0
    graph_nodes: int = 0
    graph_edges: int = 0
    #: documents per stage-2 state: not drift, but what `kag graph build` has left to do
    graph_pending: int = 0
    graph_done: int = 0
    graph_failed: int = 0

    @property
    def consistent(self) -> bool:
        return not (
            self.missing_in_vectors
            or self.orphans_in_vectors
            or self.missing_in_fulltext
            or self.orphans_in_fulltext
            or self.graph_nodes != self.entities
            or self.graph_edges != self.relations
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "collection": self.collection,
            "consistent": self.consistent,
            "ledger_chunks": self.ledger_chunks,
            "vector_chunks": self.vector_chunks,
            "fulltext_chunks": self.fulltext_chunks,
            "missing_in_vectors": len(self.missing_in_vectors),
            "orphans_in_vectors": len(self.orphans_in_vectors),
            "missing_in_fulltext": len(self.missing_in_fulltext),
            "orphans_in_fulltext": len(self.orphans_in_fulltext),
            "entities": self.entities,
            "relations": self.relations,
            "graph_nodes": self.graph_nodes,
            "graph_edges": self.graph_edges,
            "graph_pending": self.graph_pending,
            "graph_done": self.graph_done,
            "graph_failed": self.graph_failed,
        }


@dataclass
class HealthReport:
    """The whole data dir's health."""

    collections: list[CollectionHealth]
    documents_indexing: int
    documents_deleting: int
    unknown_collections: dict[str, int]  # index entries whose collection the ledger doesn't know
    #: jobs left `running` by an owner that is gone (a killed `kag ingest`): `--repair` interrupts them
    stale_jobs: list[StaleJob] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return (
            all(c.consistent for c in self.collections)
            and self.documents_indexing == 0
            and self.documents_deleting == 0
            and not self.unknown_collections
            and not self.stale_jobs
        )

    @property
    def graph_pending(self) -> int:
        return sum(c.graph_pending for c in self.collections)

    @property
    def graph_failed(self) -> int:
        return sum(c.graph_failed for c in self.collections)

    def to_dict(self) -> dict[str, object]:
        return {
            "consistent": self.consistent,
            "documents_indexing": self.documents_indexing,
            "documents_deleting": self.documents_deleting,
            "unknown_collections": self.unknown_collections,
            "graph_pending": self.graph_pending,
            "graph_failed": self.graph_failed,
            "stale_jobs": [j.to_dict() for j in self.stale_jobs],
            "collections": [c.to_dict() for c in self.collections],
        }


@dataclass(frozen=True, slots=True)
class StaleJob:
    """A `running` job whose owner process is gone."""

    job_id: str
    collection: str
    owner: str
    heartbeat_at: str | None

    def to_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "collection": self.collection,
            "owner": self.owner,
            "heartbeat_at": self.heartbeat_at,
        }


def check(stores: Stores, stale_job_seconds: float = DEFAULT_STALE_SECONDS) -> HealthReport:
    """Compare ledger, Qdrant, Tantivy and graph by counts and ids; find stale jobs."""
    from kag.stores.graph import load_graph

    ledger = stores.ledger
    names = ledger.collections()
    results = []
    all_vectors = stores.vectors.chunk_ids()
    all_fulltext = stores.fulltext.chunk_ids()
    known: set[str] = set()
    for name in names:
        truth = ledger.chunk_ids(name)
        known |= truth
        vec = stores.vectors.chunk_ids(name)
        ft = stores.fulltext.chunk_ids(name)
        entities, relations = ledger.graph_counts(name)
        graph = load_graph(ledger, name)
        stage2 = ledger.graph_status_counts(name)
        results.append(
            CollectionHealth(
                collection=name,
                ledger_chunks=len(truth),
                vector_chunks=len(vec),
                fulltext_chunks=len(ft),
                missing_in_vectors=sorted(truth - vec),
                orphans_in_vectors=sorted(vec - truth),
                missing_in_fulltext=sorted(truth - ft),
                orphans_in_fulltext=sorted(ft - truth),
                entities=entities,
                relations=relations,
                graph_nodes=graph.number_of_nodes(),
                graph_edges=graph.number_of_edges(),
                graph_pending=stage2[GraphStatus.PENDING],
                graph_done=stage2[GraphStatus.DONE],
                graph_failed=stage2[GraphStatus.FAILED],
            )
        )
    unknown = {}
    stray_vec = all_vectors - known - {c for r in results for c in r.orphans_in_vectors}
    stray_ft = all_fulltext - known - {c for r in results for c in r.orphans_in_fulltext}
    if stray_vec:
        unknown["vectors"] = len(stray_vec)
    if stray_ft:
        unknown["fulltext"] = len(stray_ft)
    return HealthReport(
        collections=results,
        documents_indexing=len(ledger.documents(status=DocumentStatus.INDEXING)),
        documents_deleting=len(ledger.documents(status=DocumentStatus.DELETING)),
        unknown_collections=unknown,
        stale_jobs=[
            StaleJob(
                j.id,
                j.collection,
                f"{j.owner_host or '?'}:{j.owner_pid if j.owner_pid is not None else '?'}",
                j.heartbeat_at.isoformat() if j.heartbeat_at is not None else None,
            )
            for j in ledger.stale_jobs(stale_job_seconds)
        ],
    )


def repair(ingestor: Ingestor) -> HealthReport:
    """Finish interrupted work, drop index entries the ledger doesn't know, add the missing ones."""
    stores = ingestor.stores
    ingestor.repair()
    report = check(stores, ingestor.stale_job_seconds)
    known = stores.ledger.chunk_ids()
    orphans_vec = sorted(stores.vectors.chunk_ids() - known)
    orphans_ft = sorted(stores.fulltext.chunk_ids() - known)
    if orphans_vec:
        stores.vectors.delete_chunks(orphans_vec)
    if orphans_ft:
        stores.fulltext.delete_chunks(orphans_ft)
    missing_docs: set[str] = set()
    for health in report.collections:
        missing = set(health.missing_in_vectors) | set(health.missing_in_fulltext)
        if missing:
            rows = stores.ledger.get_chunks(sorted(missing))
            missing_docs |= {chunk.document_id for chunk, _doc in rows.values()}
    for doc_id in sorted(missing_docs):
        ingestor.reindex_document(doc_id)
    stores.fulltext.commit()
    stores.vectors.flush()
    return check(stores, ingestor.stale_job_seconds)


def reindex(ingestor: Ingestor, batch_chunks: int = 256) -> int:
    """Drop both indexes and rebuild them from the ledger; returns the number of chunks indexed."""
    stores = ingestor.stores
    ingestor.repair()
    stores.vectors.clear()
    stores.fulltext.clear()
    total = 0
    batch: list[IndexedChunk] = []
    for doc in stores.ledger.documents():
        batch.extend(stores.ledger.indexed_chunks_of(doc.id))
        if len(batch) >= batch_chunks:
            total += _index(stores, ingestor, batch)
            batch = []
    if batch:
        total += _index(stores, ingestor, batch)
    stores.fulltext.commit()
    stores.vectors.flush()
    stores.vectors.optimize()
    # entity name vectors come from the same model as the chunks': rebuilt with them
    stores.ledger.clear_entity_vectors()
    for collection in stores.ledger.collections():
        embed_entity_names(stores.ledger, ingestor.name_embedder, collection)
    return total


def _index(stores: Stores, ingestor: Ingestor, chunks: list[IndexedChunk]) -> int:
    stores.vectors.upsert(chunks, ingestor.embedder.embed([ingestor.embedding_text(c.title, c.text) for c in chunks]))
    stores.fulltext.add(chunks)
    return len(chunks)
