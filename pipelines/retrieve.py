"""Retrievers behind one protocol, each applying the caller's collections inside the store query."""

from __future__ import annotations

import contextvars
import heapq
import math
import os
import threading
import weakref
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kag.errors import ConfigurationError
from kag.ledger import Ledger
from kag.models.embedder import Embedder
from kag.records import ChunkDraft, EntityRecord, GraphExtraction, ScoredChunk, SearchHit
from kag.stores.base import FullTextIndex, VectorIndex
from kag.stores.graph import GraphCache, LinkGraph, as_stored


@runtime_checkable
class Retriever(Protocol):
    """Ranked chunks for a query, restricted to the collections the caller may read."""

    def retrieve(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]: ...


class QueryEntityExtractor(Protocol):
    def extract(self, chunks: Sequence[ChunkDraft]) -> GraphExtraction: ...


@runtime_checkable
class FeedbackRetriever(Retriever, Protocol):
    """A vector retriever that can search again from a query vector moved toward feedback chunks."""

    def query_vector(self, query: str) -> np.ndarray: ...

    def search_vector(
        self, vector: np.ndarray, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]: ...

    def feedback_vector(
        self, query_vector: np.ndarray, chunk_ids: Sequence[str], weight: float
    ) -> np.ndarray | None: ...


class DenseRetriever:
    """Cosine similarity of query and chunk embeddings in Qdrant."""

    def __init__(self, embedder: Embedder, vectors: VectorIndex) -> None:
        self.embedder = embedder
        self.vectors = vectors

    def query_vector(self, query: str) -> np.ndarray:
        return self.embedder.embed([query])[0]

    def search_vector(
        self, vector: np.ndarray, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        if not collections or document_ids is not None and not document_ids:
            return []
        return self.vectors.search(vector, k, collections, document_ids)

    def retrieve(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        if not collections or not query.strip() or document_ids is not None and not document_ids:
            return []
        return self.search_vector(self.query_vector(query), k, collections, document_ids)

    def feedback_vector(self, query_vector: np.ndarray, chunk_ids: Sequence[str], weight: float) -> np.ndarray | None:
        """Rocchio feedback: the query vector plus `weight` times the mean stored vector of `chunk_ids`, at unit
        length; None when none of those chunks has a stored vector (the caller keeps its first ranking)."""
        stored = self.vectors.vectors(chunk_ids)
        found = [stored[c] for c in dict.fromkeys(chunk_ids) if c in stored]
        if not found:
            return None
        moved = np.asarray(query_vector, dtype=np.float32) + weight * np.mean(found, axis=0, dtype=np.float32)
        norm = float(np.linalg.norm(moved))
        return moved / norm if norm > 0 else None


class LexicalRetriever:
    """BM25 over chunk title + text in Tantivy."""

    def __init__(self, fulltext: FullTextIndex) -> None:
        self.fulltext = fulltext

    def retrieve(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        if not collections or not query.strip() or document_ids is not None and not document_ids:
            return []
        return self.fulltext.search(query, k, collections, document_ids)


class _NodeIndex:
    """Lookup tables over one loaded link graph, built once per graph object: normalized key -> nodes,
    key token -> nodes; a node whose name vector the ledger does not hold yet is embedded on first
    use and cached here."""

    def __init__(self, graph: LinkGraph) -> None:
        self.graph = graph
        self.by_key: dict[str, list[str]] = {}
        self.by_token: dict[str, list[str]] = {}
        for node, key in zip(graph.ids, graph.keys, strict=True):
            self.by_key.setdefault(key, []).append(node)
            for token in set(key.split()):
                self.by_token.setdefault(token, []).append(node)
        self.total_mentions = int(graph.mentions.sum())
        self.vectors: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()

    def mentions(self, node: str) -> int:
        return self.graph.mention_count(node)

    def vector(self, node: str, stored_usable: bool = True) -> np.ndarray:
        """The node's name vector: stored by ingestion, else embedded on first use (call under `lock`)."""
        stored = self.graph.name_vector(node) if stored_usable else None
        return stored if stored is not None else self.vectors[node]

    def idf(self, node: str) -> float:
        """Inverse mention frequency: an entity mentioned everywhere says little about any one chunk."""
        return math.log(1.0 + self.total_mentions / (1.0 + self.mentions(node)))

    def strongest_links(self, node: str, limit: int) -> list[tuple[str, float]]:
        """The node's `limit` strongest neighbours (edges in both directions, parallel edges by their best)."""
        return self.graph.strongest_links(node, limit)

    def expand(self, seeds: set[str], hops: int, limit: int, hop_decay: float = 0.5) -> dict[str, float]:
        """Like `neighbors_within`, over each node's `limit` strongest links: seeds score 1.0, a path scores
        the product of its strengths times hop_decay per hop after the first."""
        best = {s: 1.0 for s in seeds if s in self.graph}
        frontier = dict(best)
        for hop in range(hops):
            factor = 1.0 if hop == 0 else hop_decay
            reached: dict[str, float] = {}
            for node, score in frontier.items():
                for neighbor, strength in self.strongest_links(node, limit):
                    candidate = score * strength * factor
                    if candidate > best.get(neighbor, 0.0) and candidate > reached.get(neighbor, 0.0):
                        reached[neighbor] = candidate
            best.update(reached)
            frontier = reached
            if not frontier:
                break
        return best


class GraphRetriever:
    """Query entities linked to graph nodes, expanded over relations, back to the chunks that mention them.

    Linking: a query entity seeds the nodes with its normalized key; one with no such node seeds the
    nodes whose names embed closest to it, among the nodes that share a word with it. Expansion follows
    each node's `max_neighbors` strongest relations for `hops` hops; a reached entity weighs its path
    score times its inverse mention frequency, the `max_entities` heaviest (each mentioned at most
    `max_mentions` times) are looked up in the graph's in-memory postings, and a chunk scores the
    summed weights of the entities it mentions. Every step is bounded and none reads the database,
    so a query costs about the same on a graph of any size.
    """

    def __init__(
        self,
        extractor: QueryEntityExtractor,
        graphs: GraphCache,
        *,
        hops: int = 2,
        embedder: Embedder | None = None,
        link_threshold: float = 0.8,
        max_link_candidates: int = 32,
        max_neighbors: int = 16,
        max_entities: int = 64,
        max_mentions: int = 1000,
    ) -> None:
        self.extractor = extractor
        self.graphs = graphs
        self.hops = hops
        self.embedder = embedder
        self.link_threshold = link_threshold
        self.max_link_candidates = max_link_candidates
        self.max_neighbors = max_neighbors
        self.max_entities = max_entities
        self.max_mentions = max_mentions
        self._indexes: weakref.WeakKeyDictionary[LinkGraph, _NodeIndex] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _index(self, graph: LinkGraph) -> _NodeIndex:
        with self._lock:
            index = self._indexes.get(graph)
            if index is None:
                index = self._indexes[graph] = _NodeIndex(graph)
            return index

    def link(self, graph: LinkGraph, entities: Sequence[EntityRecord]) -> set[str]:
        """Graph nodes for the query's entities: exact normalized match, then embedding similarity."""
        index = self._index(graph)
        seeds: set[str] = set()
        unmatched = []
        for entity in entities:
            nodes = index.by_key.get(entity.key)
            if nodes:
                seeds.update(nodes)
            else:
                unmatched.append(entity)
        if not unmatched or self.embedder is None:
            return seeds
        shortlists = []
        for entity in unmatched:
            shared: dict[str, int] = {}
            for token in set(entity.key.split()):
                for node in index.by_token.get(token, ()):
                    shared[node] = shared.get(node, 0) + 1
            if shared:
                # most words in common first, then the most mentioned: a bounded number of embeddings
                shortlists.append(
                    (
                        entity,
                        heapq.nlargest(
                            self.max_link_candidates, shared, key=lambda n: (shared[n], index.mentions(n), n)
                        ),
                    )
                )
        if not shortlists:
            return seeds
        graph = index.graph
        # vectors stored by another name embedder (another dimension) do not count: embedded here instead
        stored_usable = graph.vector_dim == self.embedder.dim
        with index.lock:
            missing = list(
                dict.fromkeys(
                    n
                    for _, nodes in shortlists
                    for n in nodes
                    if n not in index.vectors and not (stored_usable and graph.has_name_vector(n))
                )
            )
        # one embedding call for every unmatched query entity and every candidate whose name has no
        # stored vector (none, once ingestion has embedded the collection's names)
        vectors = self.embedder.embed([e.name for e, _ in shortlists] + [graph.name(n) for n in missing])
        with index.lock:
            # rounded as the ledger stores them, so a link does not depend on where the vector came from
            index.vectors.update(zip(missing, as_stored(vectors[len(shortlists) :]), strict=True))
            matrices = [np.stack([index.vector(n, stored_usable) for n in nodes]) for _, nodes in shortlists]
        for (_, nodes), matrix, query_vector in zip(shortlists, matrices, vectors, strict=False):
            similarity = matrix @ query_vector
            seeds.update(n for n, sim in zip(nodes, similarity, strict=True) if sim >= self.link_threshold)
        return seeds

    def retrieve(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        if not collections or not query.strip() or document_ids is not None and not document_ids:
            return []
        found = self.extractor.extract([ChunkDraft(0, query, 0, len(query), 0)])
        if not found.entities:
            return []
        weights: dict[str, float] = {}
        graphs: dict[str, LinkGraph] = {}
        for collection in sorted(collections):
            graph = graphs[collection] = self.graphs.get(collection)
            index = self._index(graph)
            seeds = self.link(graph, found.entities)
            for entity, score in index.expand(seeds, self.hops, self.max_neighbors).items():
                if index.mentions(entity) <= self.max_mentions:
                    weights[entity] = max(weights.get(entity, 0.0), score * index.idf(entity))
        chosen = dict(heapq.nlargest(self.max_entities, weights.items(), key=lambda kv: (kv[1], kv[0])))
        # the chunks that mention them, from each collection's postings in memory (entity ids are
        # per collection, so each graph scores only its own)
        scored: list[tuple[str, float, str, str]] = []
        for collection, graph in graphs.items():
            own = {e: w for e, w in chosen.items() if e in graph}
            scored.extend((c, s, d, collection) for c, s, d in graph.chunk_scores(own, k, document_ids))
        ranked = heapq.nlargest(k, scored, key=lambda kv: (kv[1], kv[0]))
        return [ScoredChunk(c, s, d, collection) for c, s, d, collection in ranked]


def _combine(
    components: Mapping[str, Mapping[str, float]],
    meta: Mapping[str, ScoredChunk],
    document_weight: float,
) -> list[ScoredChunk]:
    """Sum each chunk's per-retriever components; with `document_weight` > 0, add that share of its
    document's evidence: per retriever, the best component of any chunk of the same document.

    A document split into chunks is otherwise judged by one chunk at a time: a dense hit on one
    chunk and a lexical hit on its sibling never add up. Chunks without a document id count as
    documents of their own."""
    scores: dict[str, float] = {}
    for parts in components.values():
        for chunk_id, value in parts.items():
            scores[chunk_id] = scores.get(chunk_id, 0.0) + value
    if document_weight > 0:
        document = {c: meta[c].document_id or c for c in scores}
        evidence: dict[str, float] = {}
        for parts in components.values():
            best: dict[str, float] = {}
            for chunk_id, value in parts.items():
                d = document[chunk_id]
                if d not in best or value > best[d]:
                    best[d] = value
            for d, value in best.items():
                evidence[d] = evidence.get(d, 0.0) + value
        for chunk_id in scores:
            scores[chunk_id] += document_weight * evidence[document[chunk_id]]
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [ScoredChunk(c, s, meta[c].document_id, meta[c].collection) for c, s in ordered]


def _merge_meta(rankings: Mapping[str, Sequence[ScoredChunk]]) -> dict[str, ScoredChunk]:
    """Each chunk's hit, preferring one that knows the chunk's document."""
    meta: dict[str, ScoredChunk] = {}
    for ranking in rankings.values():
        for hit in ranking:
            if hit.document_id or hit.chunk_id not in meta:
                meta[hit.chunk_id] = hit
    return meta


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[ScoredChunk]],
    *,
    weights: Mapping[str, float] | None = None,
    k: int = 60,
    document_weight: float = 0.0,
) -> list[ScoredChunk]:
    """Weighted RRF: score(d) = sum_r w_r / (k + rank_r(d)), ranks from 1 (plus document evidence:
    see `_combine`)."""
    components: dict[str, dict[str, float]] = {}
    for name, ranking in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        parts = components[name] = {}
        for rank, hit in enumerate(ranking, start=1):
            # a chunk listed twice by one retriever counts at its best rank
            parts.setdefault(hit.chunk_id, weight / (k + rank))
    return _combine(components, _merge_meta(rankings), document_weight)


def score_fusion(
    rankings: Mapping[str, Sequence[ScoredChunk]],
    *,
    weights: Mapping[str, float] | None = None,
    document_weight: float = 0.0,
) -> list[ScoredChunk]:
    """Relative score fusion: score(d) = sum_r w_r * minmax_r(score_r(d)); a list's best hit scores 1, its
    worst 0 (plus document evidence: see `_combine`)."""
    components: dict[str, dict[str, float]] = {}
    for name, ranking in rankings.items():
        if not ranking:
            continue
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        values = [hit.score for hit in ranking]
        low, high = min(values), max(values)
        span = high - low
        parts = components[name] = {}
        for hit in ranking:
            # a list whose scores are all equal gives each of its hits the full weight
            normalized = (hit.score - low) / span if span > 0 else 1.0
            parts[hit.chunk_id] = max(parts.get(hit.chunk_id, 0.0), weight * normalized)
    return _combine(components, _merge_meta(rankings), document_weight)


def zscore_fusion(
    rankings: Mapping[str, Sequence[ScoredChunk]],
    *,
    weights: Mapping[str, float] | None = None,
    document_weight: float = 0.0,
) -> list[ScoredChunk]:
    """Z-score fusion: score(d) = sum_r w_r * (score_r(d) - mean_r) / sd_r, the mean and standard deviation
    of each list's own scores; a chunk a list did not return adds nothing to it, as if it scored that
    list's mean (plus document evidence: see `_combine`). Unlike min-max, one outlying best hit does
    not squash the rest of its list."""
    components: dict[str, dict[str, float]] = {}
    for name, ranking in rankings.items():
        if not ranking:
            continue
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        values = np.asarray([hit.score for hit in ranking], dtype=np.float64)
        mean, spread = float(values.mean()), float(values.std())
        parts = components[name] = {}
        for hit, value in zip(ranking, values, strict=True):
            # a list whose scores are all equal (or a single hit) says only "these", not "in this order"
            z = (float(value) - mean) / spread if spread > 0 else 0.0
            if hit.chunk_id not in parts:  # a chunk listed twice counts at its first (best) place
                parts[hit.chunk_id] = weight * z
    return _combine(components, _merge_meta(rankings), document_weight)


#: the audit trace's name for the dense ranking before pseudo-relevance feedback
FIRST_PASS_DENSE = "dense (before feedback)"

#: fusion methods by their `KAG_FUSION` name
FUSION_METHODS = ("rrf", "score", "zscore")


def fuse(
    rankings: Mapping[str, Sequence[ScoredChunk]],
    *,
    method: str = "rrf",
    weights: Mapping[str, float] | None = None,
    rrf_k: int = 60,
    document_weight: float = 0.0,
) -> list[ScoredChunk]:
    """Fuse per-retriever rankings with the named method; retrievers of weight 0 take no part."""
    if document_weight < 0:
        raise ConfigurationError(f"document_weight must be >= 0, got {document_weight}")
    active = {n: hits for n, hits in rankings.items() if weights is None or weights.get(n, 1.0) > 0}
    if method == "rrf":
        return reciprocal_rank_fusion(active, weights=weights, k=rrf_k, document_weight=document_weight)
    if method == "score":
        return score_fusion(active, weights=weights, document_weight=document_weight)
    if method == "zscore":
        return zscore_fusion(active, weights=weights, document_weight=document_weight)
    raise ConfigurationError(
        f"unknown fusion method {method!r}", hint=f"KAG_FUSION is one of {', '.join(FUSION_METHODS)}"
    )


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _submit(fn: Any, *args: Any) -> Future[Any]:
    """Run fn(*args) on the shared retrieval pool, in a copy of the caller's context (tracing spans)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="kag-retrieve"
            )
    return _POOL.submit(contextvars.copy_context().run, fn, *args)


class HybridRetriever:
    """Runs several retrievers, each at its own depth, and fuses them (weighted RRF or relative scores).

    The retrievers run side by side on a shared thread pool (`parallel`, the default): the embedding
    model, Qdrant and Tantivy release the GIL while they work, so a query costs about its slowest
    retriever rather than their sum.

    With `feedback_chunks` > 0 (pseudo-relevance feedback, Rocchio), the dense retriever searches a
    second time from its query vector plus `feedback_weight` times the mean stored vector of the
    first fusion's top `feedback_chunks` chunks, and the fusion is redone with that ranking: what the
    lexical and graph retrievers agree on pulls the dense search toward documents that share its
    vocabulary without sharing the query's words. The cost is one more vector search."""

    def __init__(
        self,
        retrievers: Mapping[str, Retriever],
        *,
        weights: Mapping[str, float] | None = None,
        depth: int = 50,
        rrf_k: int = 60,
        fusion: str = "rrf",
        depths: Mapping[str, int] | None = None,
        parallel: bool = True,
        document_weight: float = 0.0,
        feedback_chunks: int = 0,
        feedback_weight: float = 1.0,
    ) -> None:
        if fusion not in FUSION_METHODS:
            raise ConfigurationError(
                f"unknown fusion method {fusion!r}", hint=f"KAG_FUSION is one of {', '.join(FUSION_METHODS)}"
            )
        self.retrievers = dict(retrievers)
        self.weights = dict(weights or {})
        self.depth = depth
        self.rrf_k = rrf_k
        self.fusion = fusion
        # per-retriever candidate depth; a retriever not named here uses `depth`
        self.depths = dict(depths or {})
        self.parallel = parallel
        if document_weight < 0:
            raise ConfigurationError(f"document_weight must be >= 0, got {document_weight}")
        self.document_weight = document_weight
        if feedback_chunks < 0 or feedback_weight < 0:
            raise ConfigurationError(
                f"dense feedback needs chunks >= 0 and weight >= 0, got {feedback_chunks} and {feedback_weight}"
            )
        # pseudo-relevance feedback: the dense retriever searches a second time, its query vector moved
        # toward the first fusion's top `feedback_chunks` chunks (0: off)
        self.feedback_chunks = feedback_chunks
        self.feedback_weight = feedback_weight

    def retrieve(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        return self.retrieve_traced(query, k, collections, document_ids)[0]

    def retrieve_traced(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> tuple[list[ScoredChunk], dict[str, list[ScoredChunk]]]:
        """Fused top-k and each retriever's own ranking (for the audit trace)."""
        fused, rankings = self._fused(query, k, collections, document_ids)
        return fused[:k], rankings

    def candidates(
        self, query: str, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        """Every fused candidate at exactly the configured per-retriever depths, uncut (what evaluation ranks)."""
        return self._fused(query, 0, collections, document_ids)[0]

    def _fused(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None
    ) -> tuple[list[ScoredChunk], dict[str, list[ScoredChunk]]]:
        # a retriever of weight 0 takes no part, so it is not run at all; one returns at least k, so a
        # caller asking for more than the depth still gets k
        active = [name for name in self.retrievers if self.weights.get(name, 1.0) > 0]
        dense = self.retrievers.get("dense")
        feedback = dense if self.feedback_chunks > 0 and "dense" in active and query.strip() else None
        if feedback is not None and not isinstance(feedback, FeedbackRetriever):
            raise ConfigurationError(
                f"dense feedback needs a retriever with query vectors, got {type(feedback).__name__}",
                hint="set KAG_DENSE_FEEDBACK_CHUNKS=0",
            )
        query_vectors: list[np.ndarray] = []

        def depth_of(name: str) -> int:
            return max(k, self.depths.get(name, self.depth))

        def run(name: str) -> list[ScoredChunk]:
            if feedback is not None and name == "dense":
                # keep the query vector: the feedback search starts from it
                query_vectors.append(feedback.query_vector(query))
                return feedback.search_vector(query_vectors[0], depth_of(name), collections, document_ids)
            return self.retrievers[name].retrieve(query, depth_of(name), collections, document_ids)

        if self.parallel and len(active) > 1:
            futures = {name: _submit(run, name) for name in active}
            found = {name: future.result() for name, future in futures.items()}
        else:
            found = {name: run(name) for name in active}
        rankings = {name: found.get(name, []) for name in self.retrievers}
        weights = {name: w for name, w in self.weights.items() if name in rankings}
        fused = fuse(
            rankings, method=self.fusion, weights=weights, rrf_k=self.rrf_k, document_weight=self.document_weight
        )
        if feedback is None or not fused or not query_vectors:
            return fused, rankings
        moved = feedback.feedback_vector(
            query_vectors[0], [h.chunk_id for h in fused[: self.feedback_chunks]], self.feedback_weight
        )
        if moved is None:
            return fused, rankings
        rankings["dense"] = feedback.search_vector(moved, depth_of("dense"), collections, document_ids)
        fused = fuse(
            rankings, method=self.fusion, weights=weights, rrf_k=self.rrf_k, document_weight=self.document_weight
        )
        # the audit trace shows both dense rankings; the first took no part in the final fusion
        return fused, {**rankings, FIRST_PASS_DENSE: found["dense"]}


def hydrate(ledger: Ledger, hits: Sequence[ScoredChunk], *, absolute_sources: bool = False) -> list[SearchHit]:
    """Attach text and provenance from the ledger, the source of truth, keeping the ranking.

    `source_uri` is the path relative to the folder the document was ingested from unless
    `absolute_sources` (KAG_SOURCE_URI=absolute): readers need not see the server's file system."""
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
                source_uri=doc.shown_source_uri(absolute_sources),
                text=chunk.text,
                char_start=chunk.char_start,
                char_end=chunk.char_end,
                page=chunk.page,
                heading_path=tuple(chunk.heading_path or ()),
                page_spans=doc.pages(),
            )
        )
    return out
