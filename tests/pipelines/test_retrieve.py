"""Retrieval logic: graph entity linking, weighted reciprocal-rank fusion, the hybrid retriever."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Collection
from typing import Any

import numpy as np
import pytest

from kag.errors import ConfigurationError
from kag.records import EntityRecord, GraphExtraction, ScoredChunk
from kag.stores.graph import GraphEdge, GraphNode, LinkGraph, build_graph, encode_vector, neighbors_within
from pipelines.retrieve import (
    GraphRetriever,
    HybridRetriever,
    _NodeIndex,
    fuse,
    reciprocal_rank_fusion,
    score_fusion,
)


def graph_of(*names: str) -> Any:
    return LinkGraph([GraphNode(f"e{i}", n.lower(), n, "ORG") for i, n in enumerate(names)], [])


def entity(name: str) -> EntityRecord:
    return EntityRecord(name.lower(), name, "ORG")


def test_linking_prefers_the_exact_normalized_key(embedder) -> None:
    graph = graph_of("Heron billing", "Heron")
    retriever = GraphRetriever(None, None, embedder=embedder)  # type: ignore[arg-type]
    assert retriever.link(graph, [entity("Heron")]) == {"e1"}


def test_linking_falls_back_to_embedding_similarity_among_nodes_sharing_a_word(embedder) -> None:
    graph = graph_of("Heron billing service", "billing address form", "Magpie broker")
    retriever = GraphRetriever(None, None, embedder=embedder, link_threshold=0.8)  # type: ignore[arg-type]
    assert retriever.link(graph, [entity("Heron billing services")]) == {"e0"}
    # nothing shares a word with it: no embedding is computed and nothing links
    assert retriever.link(graph, [entity("Kestrel")]) == set()


def test_linking_without_an_embedder_is_exact_only() -> None:
    graph = graph_of("Heron billing service")
    retriever = GraphRetriever(None, None)  # type: ignore[arg-type]
    assert retriever.link(graph, [entity("Heron billing services")]) == set()


class CountingEmbedder:
    """The real embedder, recording every text it is asked to embed (the Embedder protocol)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.dim = inner.dim
        self.name = inner.name

    def embed(self, texts: Any) -> Any:
        self.texts.extend(texts)
        return self.inner.embed(texts)


def test_linking_reads_stored_name_vectors_and_embeds_only_the_query_entity(embedder) -> None:
    names = ["Heron billing service", "billing address form", "Magpie broker"]
    stored = [(f"e{i}", encode_vector(v)) for i, v in enumerate(embedder.embed(names))]
    nodes = [GraphNode(f"e{i}", n.lower(), n, "ORG") for i, n in enumerate(names)]
    # a vector of another length (another model) is left out: that node's name is embedded on use
    graph = LinkGraph(nodes, [], [], [*stored[:2], ("e2", encode_vector(np.ones(8)))])
    assert graph.number_of_vectors() == 2 and graph.name_vector("e2") is None
    assert graph.has_name_vector("e0") and not graph.has_name_vector("e2") and not graph.has_name_vector("nope")
    assert graph.name_vector("e0") == pytest.approx(embedder.embed([names[0]])[0], abs=1e-3)
    counting = CountingEmbedder(embedder)
    retriever = GraphRetriever(None, None, embedder=counting, link_threshold=0.8)  # type: ignore[arg-type]
    assert retriever.link(graph, [entity("Heron billing services")]) == {"e0"}
    assert counting.texts == ["Heron billing services"]  # candidates e0, e1 have stored vectors
    # the same answer as linking with no stored vector at all, which embeds the candidates too
    plain = CountingEmbedder(embedder)
    unstored = GraphRetriever(None, None, embedder=plain, link_threshold=0.8)  # type: ignore[arg-type]
    assert unstored.link(LinkGraph(nodes, []), [entity("Heron billing services")]) == {"e0"}
    assert sorted(plain.texts) == sorted(["Heron billing services", *names[:2]])
    assert retriever.link(graph, [entity("Magpie brokers")]) == {"e2"}
    assert counting.texts[1:] == ["Magpie brokers", "Magpie broker"]  # e2's stored vector did not fit


def test_rrf_weights_and_ties() -> None:
    a = [ScoredChunk("x", 1.0), ScoredChunk("y", 0.5)]
    b = [ScoredChunk("y", 9.0), ScoredChunk("z", 1.0)]
    fused = reciprocal_rank_fusion({"a": a, "b": b}, k=60)
    assert [h.chunk_id for h in fused] == ["y", "x", "z"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    # b weighs double: its second hit (2/62) now beats a's first (1/61)
    weighted = reciprocal_rank_fusion({"a": a, "b": b}, weights={"a": 1.0, "b": 2.0}, k=60)
    assert [h.chunk_id for h in weighted] == ["y", "z", "x"]


def test_rrf_document_evidence_by_hand() -> None:
    # d1 is split in two chunks: dense ranks one second, lexical the other first; d2's one chunk is
    # dense's first; "x" has no document id and counts as a document of its own
    dense = [ScoredChunk("d2-a", 0.9, "d2"), ScoredChunk("d1-a", 0.8, "d1")]
    lexical = [ScoredChunk("d1-b", 7.0, "d1"), ScoredChunk("x", 1.0)]
    alone = reciprocal_rank_fusion({"dense": dense, "lexical": lexical}, k=10)
    assert [h.chunk_id for h in alone] == ["d1-b", "d2-a", "d1-a", "x"]  # 1/11, 1/11, 1/12, 1/12
    fused = reciprocal_rank_fusion({"dense": dense, "lexical": lexical}, k=10, document_weight=1.0)
    # d1's evidence: 1/12 (dense) + 1/11 (lexical); d2's: 1/11; x's: 1/12
    assert [(h.chunk_id, h.document_id) for h in fused] == [("d1-b", "d1"), ("d1-a", "d1"), ("d2-a", "d2"), ("x", "")]
    scores = {h.chunk_id: h.score for h in fused}
    assert scores["d1-b"] == pytest.approx(1 / 11 + 1 / 12 + 1 / 11)
    assert scores["d1-a"] == pytest.approx(1 / 12 + 1 / 12 + 1 / 11)
    assert scores["d2-a"] == pytest.approx(2 / 11)
    assert scores["x"] == pytest.approx(2 / 12)
    with pytest.raises(ConfigurationError):
        fuse({"dense": dense}, document_weight=-1)


def test_score_fusion_document_evidence_by_hand() -> None:
    dense = [
        ScoredChunk("d1-a", 1.0, "d1"),
        ScoredChunk("d2-a", 0.5, "d2"),
        ScoredChunk("d1-b", 0.0, "d1"),
        ScoredChunk("d3-a", 0.0, "d3"),
    ]
    fused = score_fusion({"dense": dense}, document_weight=0.5)
    # min-max: d1-a 1, d2-a 0.5, d1-b 0, d3-a 0; each chunk adds half its document's best (d1: 1, d2: 0.5, d3: 0)
    assert [(h.chunk_id, h.score) for h in fused] == [("d1-a", 1.5), ("d2-a", 0.75), ("d1-b", 0.5), ("d3-a", 0.0)]


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


class Meeting:
    """A retriever that returns only once every other Meeting retriever has started (the real protocol),
    and sees the caller's context variables."""

    def __init__(self, barrier: threading.Barrier, chunk: str) -> None:
        self.barrier, self.chunk = barrier, chunk
        self.seen: list[str | None] = []

    def retrieve(
        self, query: str, k: int, collections: Collection[str], document_ids: Collection[str] | None = None
    ) -> list[ScoredChunk]:
        self.seen.append(REQUEST.get(None))
        self.barrier.wait()  # raises BrokenBarrierError unless the other retriever runs at the same time
        return [ScoredChunk(self.chunk, 1.0)]


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request")


def test_hybrid_runs_its_retrievers_side_by_side_in_the_callers_context() -> None:
    barrier = threading.Barrier(2, timeout=10)
    a, b = Meeting(barrier, "x"), Meeting(barrier, "y")
    token = REQUEST.set("req-1")
    try:
        fused = HybridRetriever({"a": a, "b": b}).retrieve("q", 5, ["hr"])
    finally:
        REQUEST.reset(token)
    assert {h.chunk_id for h in fused} == {"x", "y"}
    assert a.seen == b.seen == ["req-1"]  # tracing and other context reach the pool threads


def test_hybrid_in_sequence_and_a_failing_retriever_fails_the_query() -> None:
    one = Fixed(["a"])
    hybrid = HybridRetriever({"one": one, "two": Fixed(["b"])}, parallel=False)
    assert [h.chunk_id for h in hybrid.retrieve("q", 5, ["hr"])] == ["a", "b"]

    class Broken:
        def retrieve(self, query: str, k: int, collections: Collection[str], document_ids: Any = None) -> Any:
            raise RuntimeError("index unavailable")

    with pytest.raises(RuntimeError, match="index unavailable"):
        HybridRetriever({"one": one, "broken": Broken()}).retrieve("q", 5, ["hr"])


# --- the graph retriever: expansion, weighting and its bounds ---------------------------------


def build_star_graph() -> Any:
    #  hub --0.9--> s1, --0.8--> s2, --0.7--> s3, --0.6--> s4;  s1 --0.9--> far;  rare, common unlinked
    nodes = [GraphNode("hub", "hub", "Hub", "ORG", 2)]
    nodes += [GraphNode(f"s{i}", f"s{i}", f"S{i}", "ORG", 2) for i in range(1, 5)]
    nodes += [GraphNode("far", "far", "Far", "ORG", 2), GraphNode("common", "common", "Common", "ORG", 5000)]
    edges = [GraphEdge(f"r{i}", "hub", f"s{i}", "Uses", 1.0 - i / 10) for i in range(1, 5)]
    edges += [GraphEdge("rf", "s1", "far", "Uses", 0.9), GraphEdge("rc", "hub", "common", "RelatedTo", 0.95)]
    return build_graph(nodes, edges)


def star_graph(mentions: list[tuple[str, str, str]] | None = None) -> LinkGraph:
    """The star as a link view; `mentions` are (entity, chunk, document) rows."""
    graph = build_star_graph()
    nodes = [GraphNode(n, d["key"], d["name"], d["label"], d["mentions"]) for n, d in graph.nodes(data=True)]
    links = [(u, v, d["strength"]) for u, v, d in graph.edges(data=True)]
    return LinkGraph(nodes, links, mentions or [])


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
    """The GraphCache protocol: one collection's link view, recording which collections were asked for."""

    def __init__(self, graph: LinkGraph) -> None:
        self.graph = graph
        self.asked: list[str] = []

    def get(self, collection: str) -> LinkGraph:
        self.asked.append(collection)
        return self.graph


MENTIONS = [
    ("hub", "c-hub", "d1"),
    ("s1", "c-s1", "d1"),
    ("s1", "c-both", "d2"),
    ("far", "c-both", "d2"),
    ("common", "c-x", "d1"),
]


def test_graph_retriever_scores_chunks_by_the_entities_they_mention() -> None:
    graphs = Graphs(star_graph(MENTIONS))
    retriever = GraphRetriever(Entities("Hub"), graphs, hops=2)  # type: ignore[arg-type]
    hits = retriever.retrieve("what does hub use?", 10, ["c"])
    scores = {h.chunk_id: h.score for h in hits}
    # a chunk mentioning two reached entities outranks one mentioning one of them
    assert scores["c-both"] > scores["c-s1"]
    assert [h.score for h in hits] == sorted(scores.values(), reverse=True)
    assert graphs.asked == ["c"]  # only the caller's collections are read
    # the document filter keeps only those documents' chunks
    assert {h.chunk_id for h in retriever.retrieve("what does hub use?", 10, ["c"], {"d2"})} == {"c-both"}
    assert [h.chunk_id for h in retriever.retrieve("what does hub use?", 1, ["c"])] == [hits[0].chunk_id]


def test_link_graph_chunk_scores_sum_weights_per_mention() -> None:
    graph = star_graph([*MENTIONS, ("hub", "c-both", "d2"), ("hub", "c-both", "d2")])
    scores = {c: (s, d) for c, s, d in graph.chunk_scores({"hub": 1.0, "far": 0.25, "missing": 9.0}, 10)}
    assert scores == {"c-hub": (1.0, "d1"), "c-both": (2.25, "d2")}  # mentioned twice by hub, once by far
    assert graph.chunk_scores({"hub": 1.0}, 10, {"d1"}) == [("c-hub", 1.0, "d1")]
    assert graph.chunk_scores({"hub": 1.0}, 0) == [] and graph.chunk_scores({}, 5) == []
    assert graph.number_of_chunks() == 4
    # ties at the k-th place are broken by the larger chunk id, as everywhere in retrieval
    tied = star_graph([("s2", f"c-{x}", "d1") for x in "qbzc"] + [("hub", "c-a", "d1")])
    assert [(c, s) for c, s, _ in tied.chunk_scores({"s2": 1.0, "hub": 2.0}, 3)] == [
        ("c-a", 2.0),
        ("c-z", 1.0),
        ("c-q", 1.0),
    ]


def test_graph_retriever_bounds_entities_and_skips_ubiquitous_ones() -> None:
    # every entity mentioned in its own chunk: the chunks returned tell which entities were looked up
    mentions = [(e, f"c-{e}", "d1") for e in ("hub", "s1", "s2", "s3", "s4", "far", "common")]
    retriever = GraphRetriever(  # type: ignore[arg-type]
        Entities("Hub"), Graphs(star_graph(mentions)), hops=2, max_entities=3, max_mentions=1000
    )
    looked_up = {h.chunk_id.removeprefix("c-") for h in retriever.retrieve("hub", 10, ["c"])}
    assert len(looked_up) == 3 and "hub" in looked_up
    assert "common" not in looked_up  # mentioned 5000 times: above max_mentions


def test_graph_retriever_returns_nothing_without_entities_scope_or_documents() -> None:
    graphs = Graphs(star_graph(MENTIONS))
    assert GraphRetriever(Entities(), graphs).retrieve("q", 5, ["c"]) == []  # type: ignore[arg-type]
    hub = GraphRetriever(Entities("Hub"), graphs)  # type: ignore[arg-type]
    assert hub.retrieve("q", 5, []) == [] and hub.retrieve("q", 5, ["c"], set()) == []
    assert graphs.asked == []  # none of them loaded a graph


class FixedQueryEmbedder:
    """Maps every text to one given vector and counts the calls (the Embedder protocol)."""

    def __init__(self, vector: list[float]) -> None:
        self.vector = np.asarray(vector, dtype=np.float32)
        self.calls = 0

    @property
    def dim(self) -> int:
        return len(self.vector)

    @property
    def name(self) -> str:
        return "fixed"

    def embed(self, texts: Any) -> np.ndarray:
        self.calls += 1
        return np.stack([self.vector for _ in texts])


@pytest.fixture
def feedback_index(tmp_path: Any) -> Any:
    """A real Qdrant Edge shard of three chunks with hand-made unit vectors."""
    from kag.records import IndexedChunk
    from kag.stores.vector import EdgeVectorIndex

    vectors = np.asarray([[0.8, 0.6, 0.0], [0.6, 0.0, 0.8], [0.0, 0.0, 1.0]], dtype=np.float32)
    chunks = [IndexedChunk(c, f"doc-{c}", "hr", c) for c in ("a", "b", "c")]
    with EdgeVectorIndex(tmp_path / "qdrant", 3) as index:
        index.upsert(chunks, vectors)
        yield index


def test_dense_feedback_searches_again_from_the_query_moved_toward_the_top_fused_chunks(feedback_index) -> None:
    from pipelines.retrieve import FIRST_PASS_DENSE, DenseRetriever

    embedder = FixedQueryEmbedder([1.0, 0.0, 0.0])
    dense = DenseRetriever(embedder, feedback_index)
    lexical = Fixed(["b"])
    plain = HybridRetriever({"dense": dense, "lexical": lexical}, rrf_k=1, depth=3)
    fused, rankings = plain.retrieve_traced("q", 3, ["hr"])
    # query . a = 0.8, . b = 0.6, . c = 0; lexical puts b first, so the fusion's top chunk is b
    assert [h.chunk_id for h in rankings["dense"]] == ["a", "b", "c"]
    assert [h.chunk_id for h in fused] == ["b", "a", "c"]
    assert FIRST_PASS_DENSE not in rankings

    embedder.calls = 0
    hybrid = HybridRetriever(
        {"dense": dense, "lexical": lexical}, rrf_k=1, depth=3, feedback_chunks=1, feedback_weight=1.0
    )
    fused, rankings = hybrid.retrieve_traced("q", 3, ["hr"])
    # moved query: (1, 0, 0) + b = (1.6, 0, 0.8), unit length; cosines b 0.894 > a 0.716 > c 0.447
    assert [h.chunk_id for h in rankings["dense"]] == ["b", "a", "c"]
    assert [round(h.score, 3) for h in rankings["dense"]] == [0.894, 0.716, 0.447]
    assert [h.chunk_id for h in rankings[FIRST_PASS_DENSE]] == ["a", "b", "c"]
    # the first-pass ranking is only traced: b is first in both fused lists now, a second, c third
    assert [h.chunk_id for h in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 2 + 1 / 2)
    assert embedder.calls == 1  # the query is embedded once; the second search reuses its vector

    # the second search keeps the caller's document filter
    _, rankings = hybrid.retrieve_traced("q", 3, ["hr"], {"doc-a"})
    assert [h.chunk_id for h in rankings["dense"]] == [h.chunk_id for h in rankings[FIRST_PASS_DENSE]] == ["a"]
    # and the caller's collections: nothing of "hr" comes back for a caller who may read only "other"
    _, rankings = hybrid.retrieve_traced("q", 3, ["other"])
    assert rankings["dense"] == []


def test_dense_feedback_keeps_the_first_ranking_when_the_top_chunks_have_no_vector(feedback_index) -> None:
    from pipelines.retrieve import FIRST_PASS_DENSE, DenseRetriever

    dense = DenseRetriever(FixedQueryEmbedder([1.0, 0.0, 0.0]), feedback_index)
    # "zz" is ranked first by lexical but has no stored vector: there is nothing to move toward
    hybrid = HybridRetriever(
        {"dense": dense, "lexical": Fixed(["zz"])}, weights={"lexical": 5.0}, rrf_k=1, depth=3, feedback_chunks=1
    )
    fused, rankings = hybrid.retrieve_traced("q", 3, ["hr"])
    assert [h.chunk_id for h in fused][0] == "zz"
    assert [h.chunk_id for h in rankings["dense"]] == ["a", "b", "c"]
    assert FIRST_PASS_DENSE not in rankings


def test_dense_feedback_is_refused_with_bad_values_or_a_retriever_without_vectors() -> None:
    with pytest.raises(ConfigurationError, match="feedback"):
        HybridRetriever({"dense": Fixed(["a"])}, feedback_chunks=-1)
    with pytest.raises(ConfigurationError, match="feedback"):
        HybridRetriever({"dense": Fixed(["a"])}, feedback_chunks=2, feedback_weight=-0.5)
    hybrid = HybridRetriever({"dense": Fixed(["a"]), "lexical": Fixed(["b"])}, feedback_chunks=2)
    with pytest.raises(ConfigurationError, match="query vectors") as info:
        hybrid.retrieve("q", 3, ["hr"])
    assert "KAG_DENSE_FEEDBACK_CHUNKS=0" in (info.value.hint or "")


def test_zscore_fusion_by_hand() -> None:
    from pipelines.retrieve import zscore_fusion

    # dense scores 0.9, 0.6, 0.3: mean 0.6, sd sqrt(0.06) = 0.2449 -> z = 1.2247, 0, -1.2247
    dense = [ScoredChunk("a", 0.9, "d1"), ScoredChunk("b", 0.6, "d2"), ScoredChunk("c", 0.3, "d3")]
    # lexical BM25 scores 12, 4: mean 8, sd 4 -> z = 1, -1; a chunk listed twice counts at its first place
    lexical = [ScoredChunk("c", 12.0, "d3"), ScoredChunk("b", 4.0, "d2"), ScoredChunk("c", 1.0, "d3")]
    lexical_z = [ScoredChunk("c", 12.0, "d3"), ScoredChunk("b", 4.0, "d2")]
    assert zscore_fusion({"lexical": lexical}) != zscore_fusion({"lexical": lexical_z})  # 3 values, other sd
    fused = zscore_fusion({"dense": dense, "lexical": lexical_z}, weights={"dense": 1.5, "lexical": 1.0})
    z = 0.3 / np.sqrt(0.06)
    expected = {"a": 1.5 * z, "b": 0.0 - 1.0, "c": -1.5 * z + 1.0}
    assert [h.chunk_id for h in fused] == ["a", "c", "b"]
    assert {h.chunk_id: h.score for h in fused} == pytest.approx(expected)
    assert fused[0].document_id == "d1"
    # the scale of a list does not matter (BM25 in the tens, cosines below 1): only its spread does
    scaled = [ScoredChunk(h.chunk_id, 100 * h.score, h.document_id) for h in lexical_z]
    again = zscore_fusion({"dense": dense, "lexical": scaled}, weights={"dense": 1.5, "lexical": 1.0})
    assert {h.chunk_id: h.score for h in again} == pytest.approx(expected)
    # equal scores (or one hit) carry no order: every hit of that list adds 0
    flat = zscore_fusion({"one": [ScoredChunk("x", 3.0), ScoredChunk("y", 3.0)]})
    assert {h.chunk_id: h.score for h in flat} == {"x": 0.0, "y": 0.0}
    assert fuse({"dense": dense, "lexical": lexical_z}, method="zscore", weights={"dense": 1.5}) == fused
    assert zscore_fusion({"dense": []}) == []


def test_unknown_fusion_methods_are_refused_with_the_choices() -> None:
    with pytest.raises(ConfigurationError, match="unknown fusion method") as info:
        fuse({"dense": [ScoredChunk("a", 1.0)]}, method="borda")
    assert "zscore" in (info.value.hint or "")
    with pytest.raises(ConfigurationError, match="unknown fusion method"):
        HybridRetriever({"dense": Fixed(["a"])}, fusion="borda")


def test_stored_name_vectors_of_another_embedder_are_not_used(embedder) -> None:
    from kag.models.static_embedder import StaticEmbedder

    names = ["Heron billing service", "billing address form"]
    nodes = [GraphNode(f"e{i}", n.lower(), n, "ORG") for i, n in enumerate(names)]
    # stored by the transformer (384-d); linking now runs on the static name embedder (256-d)
    graph = LinkGraph(nodes, [], [], [(f"e{i}", encode_vector(v)) for i, v in enumerate(embedder.embed(names))])
    static = StaticEmbedder()
    counting = CountingEmbedder(static)
    retriever = GraphRetriever(None, None, embedder=counting, link_threshold=0.7)  # type: ignore[arg-type]
    assert retriever.link(graph, [entity("Heron billing services")]) == {"e0"}
    assert sorted(counting.texts) == sorted(["Heron billing services", *names])  # embedded, not misread
