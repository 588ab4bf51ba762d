"""Rerank stage: one protocol, three scorers (cross-encoder, local-LLM yes-probability, none),
then overlap dedupe and MMR diversity."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kag.errors import ConfigurationError, MissingDependencyError, ModelLoadError
from kag.models.embedder import Embedder
from kag.records import SearchHit
from kag.stores.base import VectorIndex


@runtime_checkable
class Reranker(Protocol):
    """Rescores candidate hits for a query; returns them best first."""

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]: ...


class NoReranker:
    """Keeps the retrieval order and scores."""

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        return list(hits)


def _rescored(hits: Sequence[SearchHit], scores: Sequence[float]) -> list[SearchHit]:
    ranked = sorted(zip(hits, scores, strict=True), key=lambda hs: (-hs[1], hs[0].chunk_id))
    return [dataclasses.replace(h, score=float(s)) for h, s in ranked]


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder from a local path scores (query, passage) pairs."""

    def __init__(self, model_path: str, *, device: str = "cpu", batch_size: int = 32) -> None:
        if not model_path:
            raise ConfigurationError("the cross-encoder reranker needs a model path", hint="set KAG_RERANK_MODEL_PATH")
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    def warm_up(self) -> None:
        if self._model is not None:
            return
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise MissingDependencyError("sentence-transformers is not installed") from exc
        try:
            self._model = CrossEncoder(self.model_path, device=self.device, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the cross-encoder from {self.model_path}: {exc}",
                hint="KAG_RERANK_MODEL_PATH must be a local sentence-transformers CrossEncoder folder",
            ) from exc

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        if not hits:
            return []
        self.warm_up()
        pairs = [(query, f"{h.title}\n{h.text}" if h.title else h.text) for h in hits]
        scores = self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return _rescored(hits, [float(s) for s in np.asarray(scores).reshape(-1)])

    def close(self) -> None:
        self._model = None


RELEVANCE_PROMPT = (
    "Passage: {passage}\n\nQuestion: {query}\n\nDoes the passage help answer the question? Answer yes or no.\nAnswer:"
)


class LLMReranker:
    """Pointwise relevance from the local LLM: P("yes") for each (query, passage)."""

    def __init__(self, yes_probability: Callable[[str], float], *, max_passage_chars: int = 1200) -> None:
        # yes_probability(prompt) comes from the loaded GGUF (LlamaGenerator.yes_probability)
        self.yes_probability = yes_probability
        self.max_passage_chars = max_passage_chars

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        scores = [
            self.yes_probability(RELEVANCE_PROMPT.format(passage=h.text[: self.max_passage_chars], query=query))
            for h in hits
        ]
        return _rescored(hits, scores)


def dedupe_overlapping(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """Drop a hit whose character range overlaps a better hit of the same document by more than half."""
    kept: list[SearchHit] = []
    for hit in hits:
        length = max(hit.char_end - hit.char_start, 1)
        clash = False
        for other in kept:
            if other.document_id != hit.document_id:
                continue
            overlap = min(hit.char_end, other.char_end) - max(hit.char_start, other.char_start)
            if overlap > 0.5 * length:
                clash = True
                break
        if not clash:
            kept.append(hit)
    return kept


def mmr(
    hits: Sequence[SearchHit], vectors: np.ndarray, query_vector: np.ndarray, k: int, lambda_: float
) -> list[SearchHit]:
    """Maximal marginal relevance over normalized vectors: trade relevance for novelty."""
    if not hits:
        return []
    relevance = vectors @ query_vector
    chosen: list[int] = []
    remaining = list(range(len(hits)))
    while remaining and len(chosen) < k:
        if chosen:
            redundancy = (vectors[remaining] @ vectors[chosen].T).max(axis=1)
        else:
            redundancy = np.zeros(len(remaining))
        values = lambda_ * relevance[remaining] - (1 - lambda_) * redundancy
        best = remaining[int(np.argmax(values))]
        chosen.append(best)
        remaining.remove(best)
    return [hits[i] for i in chosen]


class RerankStage:
    """Scorer -> overlap dedupe -> MMR; the composed rerank step of the answer pipeline.

    MMR compares chunks by the vectors the vector index already stores (`vectors`), so only the
    query is embedded here; a chunk the index does not hold (or no index at all) is embedded."""

    def __init__(
        self,
        reranker: Reranker,
        embedder: Embedder | None = None,
        *,
        mmr_lambda: float = 0.7,
        vectors: VectorIndex | None = None,
    ) -> None:
        self.reranker = reranker
        self.embedder = embedder
        self.mmr_lambda = mmr_lambda
        self.vectors = vectors
        self._lock = threading.Lock()

    def run(self, query: str, hits: Sequence[SearchHit], k: int) -> list[SearchHit]:
        ranked = dedupe_overlapping(self.reranker.rerank(query, hits))
        if self.embedder is None or self.mmr_lambda >= 1.0 or len(ranked) <= 1:
            return ranked[:k]
        stored = self.vectors.vectors([h.chunk_id for h in ranked]) if self.vectors is not None else {}
        missing = [h for h in ranked if h.chunk_id not in stored]
        embedded = self.embedder.embed([query] + [h.text for h in missing])
        stored.update(zip([h.chunk_id for h in missing], embedded[1:], strict=True))
        matrix = np.stack([stored[h.chunk_id] for h in ranked])
        return mmr(ranked, matrix, embedded[0], k, self.mmr_lambda)


def make_reranker(
    kind: str, *, model_path: str | None = None, yes_probability: Callable[[str], float] | None = None
) -> Reranker:
    """The reranker named by the `KAG_RERANK` setting."""
    if kind == "none":
        return NoReranker()
    if kind == "cross-encoder":
        return CrossEncoderReranker(model_path or "")
    if kind == "llm":
        if yes_probability is None:
            raise ConfigurationError("the llm reranker needs the loaded generator")
        return LLMReranker(yes_probability)
    raise ConfigurationError(f"unknown reranker {kind!r}", hint="KAG_RERANK is one of none, cross-encoder, llm")
