"""Retrievers behind one protocol, each applying the caller's collections inside the store query."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable

from kag.ledger import Ledger
from kag.models.embedder import Embedder
from kag.records import ChunkDraft, GraphExtraction, ScoredChunk, SearchHit
from kag.stores.base import FullTextIndex, VectorIndex
from kag.stores.graph import GraphCache, neighbors_within


@runtime_checkable
class Retriever(Protocol):
    """Ranked chunks for a query, restricted to the collections the caller may read."""

    def retrieve(self, query: str, k: int, collections: Collection[str]) -> list[ScoredChunk]: ...


class QueryEntityExtractor(Protocol):
    def extract(self, chunks: Sequence[ChunkDraft]) -> GraphExtraction: ...


class DenseRetriever:
    """Cosine similarity of query and chunk embeddings in Qdrant."""

    def __init__(self, embedder: Embedder, vectors: VectorIndex) -> None:
        self.embedder = embedder
        self.vectors = vectors

    def retrieve(self, query: str, k: int, collections: Collection[str]) -> list[ScoredChunk]:
        if not collections or not query.strip():
            return []
        return self.vectors.search(self.embedder.embed([query])[0], k, collections)


class LexicalRetriever:
    """BM25 over chunk title + text in Tantivy."""

    def __init__(self, fulltext: FullTextIndex) -> None:
        self.fulltext = fulltext

    def retrieve(self, query: str, k: int, collections: Collection[str]) -> list[ScoredChunk]:
        if not collections or not query.strip():
            return []
        return self.fulltext.search(query, k, collections)


class GraphRetriever:
    """Query entities linked to graph nodes, expanded over relations, back to the chunks that mention them."""

    def __init__(self, ledger: Ledger, extractor: QueryEntityExtractor, graphs: GraphCache, *, hops: int = 2) -> None:
        self.ledger = ledger
        self.extractor = extractor
        self.graphs = graphs
        self.hops = hops

    def retrieve(self, query: str, k: int, collections: Collection[str]) -> list[ScoredChunk]:
        if not collections or not query.strip():
            return []
        found = self.extractor.extract([ChunkDraft(0, query, 0, len(query), 0)])
        keys = {e.key for e in found.entities}
        if not keys:
            return []
        entity_scores: dict[str, float] = {}
        for collection in sorted(collections):
            graph = self.graphs.get(collection)
            seeds = [n for n, key in graph.nodes(data="key") if key in keys]
            for entity, score in neighbors_within(graph, seeds, hops=self.hops).items():
                entity_scores[entity] = max(entity_scores.get(entity, 0.0), score)
        chunk_scores: dict[str, float] = {}
        for entity, chunk in self.ledger.mentions_of(sorted(entity_scores), sorted(collections)):
            chunk_scores[chunk] = chunk_scores.get(chunk, 0.0) + entity_scores[entity]
        ranked = sorted(chunk_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [ScoredChunk(chunk_id=c, score=s) for c, s in ranked]


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[ScoredChunk]],
    *,
    weights: Mapping[str, float] | None = None,
    k: int = 60,
) -> list[ScoredChunk]:
    """Weighted RRF: score(d) = sum_r w_r / (k + rank_r(d)), ranks from 1."""
    scores: dict[str, float] = {}
    meta: dict[str, ScoredChunk] = {}
    for name, ranking in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (k + rank)
            if hit.document_id or hit.chunk_id not in meta:
                meta[hit.chunk_id] = hit
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [ScoredChunk(c, s, meta[c].document_id, meta[c].collection) for c, s in ordered]


class HybridRetriever:
    """Runs several retrievers at a per-retriever depth and fuses them with weighted RRF."""

    def __init__(
        self,
        retrievers: Mapping[str, Retriever],
        *,
        weights: Mapping[str, float] | None = None,
        depth: int = 50,
        rrf_k: int = 60,
    ) -> None:
        self.retrievers = dict(retrievers)
        self.weights = dict(weights or {})
        self.depth = depth
        self.rrf_k = rrf_k

    def retrieve(self, query: str, k: int, collections: Collection[str]) -> list[ScoredChunk]:
        depth = max(k, self.depth)
        rankings = {name: r.retrieve(query, depth, collections) for name, r in self.retrievers.items()}
        return reciprocal_rank_fusion(rankings, weights=self.weights, k=self.rrf_k)[:k]


def hydrate(ledger: Ledger, hits: Sequence[ScoredChunk]) -> list[SearchHit]:
    """Attach text and provenance from the ledger, the source of truth, keeping the ranking."""
    rows = ledger.get_chunks([h.chunk_id for h in hits])
    out = []
    for hit in hits:
        if hit.chunk_id not in rows:
            continue  # an index entry the ledger no longer has: never show it
        chunk, doc = rows[hit.chunk_id]
        out.append(
            SearchHit(
                chunk_id=chunk.id,
                score=hit.score,
                document_id=doc.id,
                collection=chunk.collection,
                title=doc.title,
                source_uri=doc.source_uri,
                text=chunk.text,
                char_start=chunk.char_start,
                char_end=chunk.char_end,
                page=chunk.page,
                heading_path=tuple(chunk.heading_path or ()),
            )
        )
    return out
