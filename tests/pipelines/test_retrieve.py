"""Retrieval logic: graph entity linking, weighted reciprocal-rank fusion, the hybrid retriever."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from kag.records import EntityRecord, GraphExtraction, ScoredChunk
from kag.stores.graph import GraphEdge, GraphNode, LinkGraph, build_graph, neighbors_within
from pipelines.retrieve import GraphRetriever, HybridRetriever, _NodeIndex, reciprocal_rank_fusion


def graph_of(*names: str) -> Any:
    return LinkGraph([GraphNode(f"e{i}", n.lower(), n, "ORG") for i, n in enumerate(names)], [])


def entity(name: str) -> EntityRecord:
    return EntityRecord(name.lower(), name, "ORG")


def test_linking_prefers_the_exact_normalized_key(embedder) -> None:
    graph = graph_of("Heron billing", "Heron")
    retriever = GraphRetriever(None, None, None, embedder=embedder)  # type: ignore[arg-type]
    assert retriever.link(graph, [entity("Heron")]) == {"e1"}


def test_linking_falls_back_to_embedding_similarity_among_nodes_sharing_a_word(embedder) -> None:
    graph = graph_of("Heron billing service", "billing address form", "Magpie broker")
    retriever = GraphRetriever(None, None, None, embedder=embedder, link_threshold=0.8)  # type: ignore[arg-type]
    assert retriever.link(graph, [entity("Heron billing services")]) == {"e0"}
    # nothing shares a word with it: no embedding is computed and nothing links
    assert retriever.link(graph, [entity("Kestrel")]) == set()


def test_linking_without_an_embedder_is_exact_only() -> None:
    graph = graph_of("Heron billing service")
    retriever = GraphRetriever(None, None, None)  # type: ignore[arg-type]
    assert retriever.link(graph, [entity("Heron billing services")]) == set()


def test_rrf_weights_and_ties() -> None:
    a = [ScoredChunk("x", 1.0), ScoredChunk("y", 0.5)]
    b = [ScoredChunk("y", 9.0), ScoredChunk("z", 1.0)]
    fused = reciprocal_rank_fusion({"a": a, "b": b}, k=60)
    assert [h.chunk_id for h in fused] == ["y", "x", "z"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    # b weighs double: its second hit (2/62) now beats a's first (1/61)
    weighted = reciprocal_rank_fusion({"a": a, "b": b}, weights={"a": 1.0, "b": 2.0}, k=60)
    assert [h.chunk_id for h in weighted] == ["y", "z", "x"]


class Fixed:
    """A retriever that returns a fixed ranking and records what it was asked (the real protocol)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.calls: list[tuple[int, tuple[str, ...], Collection[str] | None]] = []

    def retrieve(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        self.calls.append((k, tuple(collections), document_ids))
        return [ScoredChunk(i, 1.0) for i in self.ids[:k]]


def test_hybrid_passes_scope_depth_and_filters_and_skips_zero_weight() -> None:
    dense, lexical, graph = Fixed(["a", "b"]), Fixed(["b", "c"]), Fixed(["z"])
    hybrid = HybridRetriever(
        {"dense": dense, "lexical": lexical, "graph": graph}, weights={"graph": 0.0}, depth=7, rrf_k=60
    )
    fused, rankings = hybrid.retrieve_traced("q", 2, ["hr"], {"d1"})
    assert [h.chunk_id for h in fused] == ["b", "a"]
    assert set(rankings) == {"dense", "lexical", "graph"}
    for r in (dense, lexical):
        assert r.calls == [(7, ("hr",), {"d1"})]
    # a retriever of weight 0 is not run at all (it would cost time and add nothing), and its trace is empty
    assert graph.calls == [] and rankings["graph"] == []
    assert "z" not in {h.chunk_id for h in hybrid.retrieve("q", 10, ["hr"])}


# --- the graph retriever: expansion, weighting and its bounds ---------------------------------


def build_star_graph() -> Any:
    #  hub --0.9--> s1, --0.8--> s2, --0.7--> s3, --0.6--> s4;  s1 --0.9--> far;  rare, common unlinked
    nodes = [GraphNode("hub", "hub", "Hub", "ORG", 2)]
    nodes += [GraphNode(f"s{i}", f"s{i}", f"S{i}", "ORG", 2) for i in range(1, 5)]
    nodes += [GraphNode("far", "far", "Far", "ORG", 2), GraphNode("common", "common", "Common", "ORG", 5000)]
    edges = [GraphEdge(f"r{i}", "hub", f"s{i}", "Uses", 1.0 - i / 10) for i in range(1, 5)]
    edges += [GraphEdge("rf", "s1", "far", "Uses", 0.9), GraphEdge("rc", "hub", "common", "RelatedTo", 0.95)]
    return build_graph(nodes, edges)


def star_graph() -> LinkGraph:
    return LinkGraph.from_graph(build_star_graph())


def test_expansion_matches_neighbors_within_when_unbounded() -> None:
    graph = build_star_graph()
    assert _NodeIndex(LinkGraph.from_graph(graph)).expand({"hub"}, hops=2, limit=100) == pytest.approx(
        neighbors_within(graph, ["hub"], hops=2)
    )


def test_expansion_follows_only_each_nodes_strongest_links() -> None:
    index = _NodeIndex(star_graph())
    reached = index.expand({"hub"}, hops=1, limit=2)
    assert set(reached) == {"hub", "common", "s1"}  # the two strongest of hub's five links
    assert index.strongest_links("hub", 2) == [("common", 0.95), ("s1", pytest.approx(0.9))]
    assert index.expand({"missing"}, hops=2, limit=2) == {}  # an unknown seed reaches nothing


def test_inverse_mention_frequency_favours_rare_entities() -> None:
    index = _NodeIndex(star_graph())
    assert index.idf("far") > index.idf("common") > 0


class Entities:
    """A QueryEntityExtractor that finds a fixed set of entities in any query (the real protocol)."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def extract(self, chunks: Any) -> GraphExtraction:
        return GraphExtraction(entities=tuple(entity(n) for n in self.names))


class Graphs:
    def __init__(self, graph: Any) -> None:
        self.graph = graph

    def get(self, collection: str) -> Any:
        return self.graph


class Mentions:
    """The ledger's `mentions_of`: (entity, chunk) pairs, recording what was asked."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.asked: list[tuple[list[str], list[str], Collection[str] | None]] = []

    def mentions_of(
        self, entity_ids: list[str], collections: list[str], document_ids: Collection[str] | None = None
    ) -> list[tuple[str, str]]:
        self.asked.append((list(entity_ids), list(collections), document_ids))
        return [(e, c) for e, c in self.pairs if e in entity_ids]


def test_graph_retriever_scores_chunks_by_the_entities_they_mention() -> None:
    ledger = Mentions([("hub", "c-hub"), ("s1", "c-s1"), ("s1", "c-both"), ("far", "c-both"), ("common", "c-x")])
    retriever = GraphRetriever(ledger, Entities("Hub"), Graphs(star_graph()), hops=2)  # type: ignore[arg-type]
    hits = retriever.retrieve("what does hub use?", 10, ["c"], {"d1"})
    scores = {h.chunk_id: h.score for h in hits}
    # a chunk mentioning two reached entities outranks one mentioning one of them
    assert scores["c-both"] > scores["c-s1"]
    assert [h.score for h in hits] == sorted(scores.values(), reverse=True)
    assert ledger.asked[0][1:] == (["c"], {"d1"})  # scope and document filter reach the ledger query


def test_graph_retriever_bounds_entities_and_skips_ubiquitous_ones() -> None:
    ledger = Mentions([])
    retriever = GraphRetriever(  # type: ignore[arg-type]
        ledger, Entities("Hub"), Graphs(star_graph()), hops=2, max_entities=3, max_mentions=1000
    )
    retriever.retrieve("hub", 10, ["c"])
    looked_up = ledger.asked[0][0]
    assert len(looked_up) == 3 and "hub" in looked_up
    assert "common" not in looked_up  # mentioned 5000 times: above max_mentions


def test_graph_retriever_returns_nothing_without_entities_scope_or_documents() -> None:
    ledger = Mentions([("hub", "c-hub")])
    graphs = Graphs(star_graph())
    assert GraphRetriever(ledger, Entities(), graphs).retrieve("q", 5, ["c"]) == []  # type: ignore[arg-type]
    hub = GraphRetriever(ledger, Entities("Hub"), graphs)  # type: ignore[arg-type]
    assert hub.retrieve("q", 5, []) == [] and hub.retrieve("q", 5, ["c"], set()) == []
    assert ledger.asked == []  # none of them reached the ledger
