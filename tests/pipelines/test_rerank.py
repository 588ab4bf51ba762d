"""Rerank stage: scorers, overlap dedupe and MMR."""

from __future__ import annotations

import numpy as np
import pytest

from kag.errors import ConfigurationError
from kag.records import SearchHit
from pipelines.rerank import (
    CrossEncoderReranker,
    LLMReranker,
    NoReranker,
    RerankStage,
    dedupe_overlapping,
    make_reranker,
    mmr,
)


def hit(cid: str, text: str, doc: str = "d1", start: int = 0, score: float = 0.0) -> SearchHit:
    return SearchHit(cid, score, doc, "c", "T", "/x", text, start, start + len(text), None, ())


def test_no_reranker_keeps_order() -> None:
    hits = [hit("a", "x"), hit("b", "y")]
    assert NoReranker().rerank("q", hits) == hits


def test_llm_reranker_orders_by_yes_probability() -> None:
    probs = {"about cats": 0.9, "about dogs": 0.2}
    reranker = LLMReranker(lambda prompt: next(p for k, p in probs.items() if k in prompt))
    out = reranker.rerank("cats?", [hit("d", "about dogs"), hit("c", "about cats")])
    assert [h.chunk_id for h in out] == ["c", "d"] and out[0].score == pytest.approx(0.9)


def test_cross_encoder_runs_a_real_model_from_a_local_path(embedder) -> None:
    # no trained cross-encoder ships on PyPI; a BERT checkpoint with a fresh head exercises the real code path
    reranker = CrossEncoderReranker(embedder.model_path)
    out = reranker.rerank("q", [hit("a", "alpha text"), hit("b", "beta text"), hit("c", "gamma")])
    assert sorted(h.chunk_id for h in out) == ["a", "b", "c"]
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)


def test_cross_encoder_needs_a_path_and_unknown_kind_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="KAG_RERANK_MODEL_PATH"):
        make_reranker("cross-encoder")
    with pytest.raises(ConfigurationError, match="unknown reranker"):
        make_reranker("magic")


def test_dedupe_drops_mostly_overlapping_chunks_of_the_same_document() -> None:
    a = hit("a", "x" * 100, start=0)
    b = hit("b", "x" * 100, start=30)  # overlaps a by 70%
    c = hit("c", "x" * 100, start=90)  # overlaps a by 10%
    d = hit("d", "x" * 100, doc="d2", start=0)  # another document
    assert [h.chunk_id for h in dedupe_overlapping([a, b, c, d])] == ["a", "c", "d"]


def test_mmr_prefers_novel_results() -> None:
    q = np.array([1.0, 0.0, 0.0])
    vectors = np.array([[0.99, 0.14, 0.0], [0.99, 0.14, 0.0], [0.8, 0.0, 0.6]])
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    hits = [hit("a", "a"), hit("dup", "a"), hit("other", "b")]
    assert [h.chunk_id for h in mmr(hits, vectors, q, 2, 0.5)] == ["a", "other"]
    assert [h.chunk_id for h in mmr(hits, vectors, q, 2, 1.0)] == ["a", "dup"]


def test_rerank_stage_composes_scorer_dedupe_and_mmr(embedder) -> None:
    stage = RerankStage(NoReranker(), embedder, mmr_lambda=0.5)
    hits = [
        hit("a", "Employees accrue 1.5 days of paid time off per month."),
        hit("a2", "Employees accrue 1.5 days of paid time off per month!", doc="d2"),
        hit("b", "The Osprey gateway allows 900 requests per minute.", doc="d3"),
    ]
    out = stage.run("paid time off and rate limits", hits, 2)
    assert [h.chunk_id for h in out] == ["a", "b"]


def test_rerank_stage_compares_chunks_by_the_vectors_the_index_stores(embedder, tmp_path) -> None:
    from kag.records import IndexedChunk
    from kag.stores.vector import EdgeVectorIndex

    texts = {
        "a": "Employees accrue 1.5 days of paid time off per month.",
        "b": "Paid time off requests go to the manager two weeks ahead.",
        "c": "The Osprey gateway allows 900 requests per minute.",
    }
    hits = [hit(cid, text, doc=f"d-{cid}") for cid, text in texts.items()]
    vectors = embedder.embed(list(texts.values()))
    query = "How many days of paid time off do employees accrue per month?"
    with EdgeVectorIndex(tmp_path / "qdrant", vectors.shape[1]) as index:
        # the index holds a and c under each other's vectors: what is stored is what MMR must use
        chunks = [IndexedChunk(cid, f"d-{cid}", "hr", text) for cid, text in texts.items()]
        index.upsert(chunks, np.stack([vectors[2], vectors[1], vectors[0]]))
        by_text = RerankStage(NoReranker(), embedder, mmr_lambda=0.99).run(query, hits, 3)
        by_index = RerankStage(NoReranker(), embedder, mmr_lambda=0.99, vectors=index).run(query, hits, 3)
        assert [h.chunk_id for h in by_text][0] == "a"
        assert [h.chunk_id for h in by_index][0] == "c"  # stored under a's vector: the most relevant by the index
        # a hit the index does not hold is embedded from its text instead of failing
        extra = hit("z", "Unindexed note on paid time off carry-over.", doc="d-z")
        both = RerankStage(NoReranker(), embedder, mmr_lambda=0.99, vectors=index).run(query, [*hits, extra], 4)
        assert {h.chunk_id for h in both} == {"a", "b", "c", "z"}
