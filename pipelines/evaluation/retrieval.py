"""Run retrieval setups over queries: kag chunk rankings become document rankings, timed per query."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kag.ledger import Ledger
from kag.records import ScoredChunk, SearchHit
from pipelines.evaluation.datasets import CorpusDoc
from pipelines.rerank import Reranker
from pipelines.retrieve import HybridRetriever, Retriever

Run = dict[str, dict[str, float]]


class DocRanker(Protocol):
    """Corpus document ids for a query, best first."""

    def rank(self, query: str) -> list[str]: ...


class DocumentMap:
    """Maps kag chunks back to the dataset's corpus ids (through the ledger's documents)."""

    def __init__(self, ledger: Ledger, collection: str, corpus_id: Callable[[str], str | None]) -> None:
        self.ledger = ledger
        self.by_document: dict[str, str] = {}
        for row in ledger.documents(collection=collection):
            cid = corpus_id(row.source_uri)
            if cid is not None:
                self.by_document[row.id] = cid
        self._by_chunk: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self.by_document)

    def corpus_ids(self, hits: Sequence[ScoredChunk]) -> list[str | None]:
        """The corpus id of each hit (None for a chunk the ledger no longer has)."""
        unknown = [h.chunk_id for h in hits if not h.document_id and h.chunk_id not in self._by_chunk]
        if unknown:  # the graph retriever returns chunk ids only
            rows = self.ledger.get_chunks(unknown)
            for chunk_id in unknown:
                row = rows.get(chunk_id)
                self._by_chunk[chunk_id] = self.by_document.get(row[1].id) if row else None
        return [self.by_document.get(h.document_id) if h.document_id else self._by_chunk.get(h.chunk_id) for h in hits]


def documents_by_best_chunk(doc_ids: Sequence[str | None]) -> list[str]:
    """Max aggregation: a document ranks where its best chunk ranks; later chunks of it add nothing."""
    return list(dict.fromkeys(d for d in doc_ids if d is not None))


class KagDocRanker:
    """A kag retriever, optionally reranked, turned into a document ranking."""

    def __init__(
        self,
        retriever: Retriever,
        collection: str,
        documents: DocumentMap,
        *,
        depth: int,
        reranker: Reranker | None = None,
        rerank_depth: int = 20,
        hydrate: Callable[[Sequence[ScoredChunk]], list[SearchHit]] | None = None,
    ) -> None:
        if reranker is not None and hydrate is None:
            raise ValueError("a reranker needs hydrate() to read the chunks' text")
        self.retriever = retriever
        self.collection = collection
        self.documents = documents
        self.depth = depth
        self.reranker = reranker
        self.rerank_depth = rerank_depth
        self.hydrate = hydrate

    def rank(self, query: str) -> list[str]:
        hits: list[ScoredChunk]
        if isinstance(self.retriever, HybridRetriever):
            # the whole fused pool at the configured per-retriever depths, as the answer pipeline sees it
            hits = self.retriever.candidates(query, [self.collection])
        else:
            hits = self.retriever.retrieve(query, self.depth, [self.collection])
        if self.reranker is not None and hits:
            assert self.hydrate is not None
            head = self.hydrate(hits[: self.rerank_depth])
            reranked = self.reranker.rerank(query, head)
            # the reranker reorders the head it scored; the tail keeps its retrieval order below it
            ordered = [ScoredChunk(h.chunk_id, h.score, h.document_id, h.collection) for h in reranked]
            hits = ordered + list(hits[self.rerank_depth :])
        return documents_by_best_chunk(self.documents.corpus_ids(hits))


_WORD = re.compile(r"\w+")


def bm25_tokens(text: str) -> list[str]:
    """Lowercased word tokens, no stemming and no stopword list: the plain BM25Okapi baseline."""
    return _WORD.findall(text.lower())


class Bm25OkapiRanker:
    """rank-bm25's BM25Okapi (k1=1.5, b=0.75) over whole documents (title + text)."""

    def __init__(self, docs: Sequence[CorpusDoc], *, depth: int) -> None:
        from rank_bm25 import BM25Okapi

        kept = [d for d in docs if (d.title + d.text).strip()]
        self.ids = [d.id for d in kept]
        self.depth = depth
        self.model = BM25Okapi([bm25_tokens(f"{d.title} {d.text}") for d in kept])

    def rank(self, query: str) -> list[str]:
        scores = np.asarray(self.model.get_scores(bm25_tokens(query)))
        top = min(self.depth, len(scores))
        best = np.argpartition(-scores, top - 1)[:top] if top else np.array([], dtype=int)
        order = sorted(best.tolist(), key=lambda i: (-scores[i], self.ids[i]))
        return [self.ids[i] for i in order if scores[i] > 0]


@dataclass
class SetupResult:
    """One setup's run over the queries: document rankings and per-query latency."""

    name: str
    params: dict[str, Any]
    rankings: dict[str, list[str]] = field(default_factory=dict)
    latencies: dict[str, float] = field(default_factory=dict)  # seconds per query

    @property
    def run(self) -> Run:
        """Rankings as ranx runs want them: strictly decreasing scores 1/rank."""
        return {q: {d: 1.0 / r for r, d in enumerate(docs, start=1)} for q, docs in self.rankings.items()}

    def latency_ms(self) -> dict[str, float]:
        values = np.array(list(self.latencies.values())) * 1000 if self.latencies else np.zeros(1)
        return {
            "p50": round(float(np.percentile(values, 50)), 2),
            "p95": round(float(np.percentile(values, 95)), 2),
            "mean": round(float(values.mean()), 2),
        }


def run_setup(
    name: str,
    ranker: DocRanker,
    queries: Mapping[str, str],
    *,
    params: dict[str, Any] | None = None,
    on_query: Callable[[], None] | None = None,
) -> SetupResult:
    """Rank every query once, timing each call (retrieval, rerank and the chunk-to-document mapping)."""
    result = SetupResult(name, dict(params or {}))
    for qid, text in queries.items():
        started = time.perf_counter()
        docs = ranker.rank(text)
        result.latencies[qid] = time.perf_counter() - started
        result.rankings[qid] = docs
        if on_query is not None:
            on_query()
    return result
