"""The sweep fuses cached rankings exactly as the hybrid retriever does; setup names; doc aggregation."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from kag.errors import EvaluationError
from kag.records import ScoredChunk
from pipelines.evaluation.retrieval import documents_by_best_chunk
from pipelines.evaluation.setups import parse_setup, parse_setups
from pipelines.evaluation.tuning import FusionConfig, Grid, collect_rankings, fused_rankings
from pipelines.retrieve import HybridRetriever, score_fusion


class ListRetriever:
    """A retriever with a fixed ranking per query (implements the Retriever protocol)."""

    def __init__(self, rankings: dict[str, list[tuple[str, float]]]) -> None:
        self.rankings = rankings
        self.calls = 0

    def retrieve(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        self.calls += 1
        return [ScoredChunk(c, s, f"doc-{c[0]}", "eval") for c, s in self.rankings[query][:k]]


DENSE = {"q": [("a1", 0.9), ("b1", 0.8), ("c1", 0.7), ("a2", 0.6), ("d1", 0.5)]}
LEXICAL = {"q": [("c1", 12.0), ("d1", 9.0), ("a2", 3.0), ("e1", 1.0)]}
GRAPH = {"q": [("e1", 2.0), ("b1", 1.0)]}


@pytest.mark.parametrize("fusion", ["rrf", "score"])
@pytest.mark.parametrize(("depth_dense", "depth_lexical", "weight_graph"), [(5, 4, 0.0), (2, 3, 0.5), (4, 1, 1.0)])
def test_sweep_reproduces_the_hybrid_retriever(
    tmp_path: Path, fusion: str, depth_dense: int, depth_lexical: int, weight_graph: float
) -> None:
    retrievers = {"dense": ListRetriever(DENSE), "lexical": ListRetriever(LEXICAL), "graph@2": ListRetriever(GRAPH)}
    cache = collect_rankings(retrievers, {"q": "q"}, "eval", 5, cache_dir=tmp_path)
    config = FusionConfig(fusion, 30, 1.5, 1.0, weight_graph, depth_dense, depth_lexical, 5, 2)
    doc_of = {c: f"doc-{c[0]}" for r in (DENSE, LEXICAL, GRAPH) for c, _ in r["q"]}

    hybrid = HybridRetriever(
        {"dense": retrievers["dense"], "lexical": retrievers["lexical"], "graph": retrievers["graph@2"]},
        weights={"dense": 1.5, "lexical": 1.0, "graph": weight_graph},
        rrf_k=30,
        fusion=fusion,
        depth=5,
        depths={"dense": depth_dense, "lexical": depth_lexical},
    )
    expected = documents_by_best_chunk([h.document_id for h in hybrid.candidates("q", ["eval"])])
    assert fused_rankings(config, cache, doc_of) == {"q": expected}

    # a second sweep reads the stored rankings back instead of retrieving again
    calls = {n: r.calls for n, r in retrievers.items()}
    again = collect_rankings(retrievers, {"q": "q"}, "eval", 3, cache_dir=tmp_path)
    assert {n: r.calls for n, r in retrievers.items()} == calls
    assert [h.chunk_id for h in again["dense"]["q"]] == ["a1", "b1", "c1"]
    # a ranking made under other query-time settings (its variant tag) is not reused
    collect_rankings(retrievers, {"q": "q"}, "eval", 3, cache_dir=tmp_path, variants={"lexical": "@title0.5"})
    assert retrievers["lexical"].calls == calls["lexical"] + 1 and retrievers["dense"].calls == calls["dense"]


def test_relative_score_fusion_by_hand() -> None:
    fused = score_fusion(
        {
            "dense": [ScoredChunk("a", 1.0), ScoredChunk("b", 0.75), ScoredChunk("c", 0.5)],
            "lexical": [ScoredChunk("c", 10.0), ScoredChunk("a", 4.0)],
        },
        weights={"dense": 2.0, "lexical": 1.0},
    )
    # dense min-max: a=1, b=0.5, c=0; lexical: c=1, a=0; ties break by chunk id
    assert [(h.chunk_id, h.score) for h in fused] == [("a", 2.0), ("b", 1.0), ("c", 1.0)]


def test_documents_rank_by_their_best_chunk() -> None:
    assert documents_by_best_chunk(["d2", "d1", "d2", None, "d3", "d1"]) == ["d2", "d1", "d3"]


def test_grid_leaves_graph_settings_out_when_its_weight_is_zero() -> None:
    grid = Grid(
        fusion=("rrf",),
        rrf_k=(60,),
        weight_dense=(1.0,),
        weight_graph=(0.0, 0.5),
        depth_dense=(50,),
        depth_lexical=(50,),
        depth_graph=(10, 20),
        graph_hops=(1, 2),
    )
    configs = list(grid.configs())
    assert len(configs) == 1 + 4
    assert sum(c.weight_graph == 0 for c in configs) == 1


def test_setup_names() -> None:
    assert parse_setup("hybrid").retrievers == ("dense", "lexical") and parse_setup("hybrid").rerank == "none"
    assert parse_setup("hybrid+graph:llm").retrievers == ("dense", "lexical", "graph")
    assert parse_setup("hybrid+graph:llm").rerank == "llm"
    assert parse_setup("default").rerank is None  # the settings decide
    assert [s.name for s in parse_setups(["lexical,dense", "lexical", " bm25-okapi "])] == [
        "lexical",
        "dense",
        "bm25-okapi",
    ]
    for bad, message in (
        ("sparse", "unknown setup 'sparse'"),
        ("dense:colbert", "unknown reranker 'colbert'"),
        ("bm25-okapi:llm", "takes no reranker"),
    ):
        with pytest.raises(EvaluationError, match=message):
            parse_setup(bad)
    with pytest.raises(EvaluationError, match="no setup given"):
        parse_setups([" , "])
