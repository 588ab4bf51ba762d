"""build_graph, neighbors_within and the LinkGraph retrieval view on handmade graphs."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime

import networkx as nx
import pytest

from kag.stores.graph import (
    RELATION_GROUPS,
    RELATION_TYPES,
    GraphEdge,
    GraphNode,
    LinkGraph,
    build_graph,
    neighbors_within,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def chain_graph() -> nx.MultiDiGraph:
    #   a --0.9--> b --0.8--> c --0.9--> d        a <--0.4-- e (pointing at a)
    nodes = [GraphNode(n, n, n.upper(), "KEYPHRASE", 1) for n in "abcde"]
    edges = [
        GraphEdge("r1", "a", "b", "Uses", 0.9, "c1", 0, 10, NOW),
        GraphEdge("r2", "b", "c", "DependsOn", 0.8, "c1", 0, 10, NOW),
        GraphEdge("r3", "c", "d", "Contains", 0.9, "c2", 5, 20, NOW),
        GraphEdge("r4", "e", "a", "RelatedTo", 0.4, "c3", 0, 8, NOW),
    ]
    return build_graph(nodes, edges)


def test_ontology_constants() -> None:
    assert set(RELATION_GROUPS) == {"hierarchy", "function", "structure", "semantics", "technique"}
    assert RELATION_GROUPS["technique"] == ("Implements", "Extends", "Uses", "Optimizes")
    assert len(RELATION_TYPES) == len(set(RELATION_TYPES)) == 19
    assert RELATION_GROUPS["structure"] == ("Contains", "Composes", "DependsOn", "Connects")
    assert {"OppositeTo", "Influences"} <= set(RELATION_GROUPS["semantics"])
    assert "RelatedTo" in RELATION_GROUPS["semantics"]


def test_build_graph_nodes_and_edges() -> None:
    graph = chain_graph()
    assert graph.number_of_nodes() == 5
    assert graph.nodes["a"] == {"key": "a", "name": "A", "label": "KEYPHRASE", "mentions": 1}
    edge = graph.edges["c", "d", "r3"]
    assert edge == {
        "type": "Contains",
        "strength": 0.9,
        "chunk_id": "c2",
        "evidence_start": 5,
        "evidence_end": 20,
        "created_at": NOW,
    }


def test_build_graph_accepts_tuples_and_named_rows_and_keeps_parallel_edges() -> None:
    Row = namedtuple("Row", "entity_id key name label mention_count")
    entities = [("x", "x", "X", "ORG", 3), Row("y", "y", "Y", "KEYPHRASE", 1)]
    relations = [
        ("r1", "x", "y", "Uses", 0.9, "c1", 0, 4, NOW),
        ("r2", "x", "y", "RelatedTo", 0.3, "c2", 0, 4, NOW),
        ("r3", "x", "gone", "Uses", 0.9, "c1", 0, 4, NOW),  # its target is not loaded
    ]
    graph = build_graph(entities, relations)
    assert set(graph.nodes) == {"x", "y"}
    assert graph.nodes["y"]["label"] == "KEYPHRASE"
    assert graph.number_of_edges("x", "y") == 2
    assert {k for _, _, k in graph.edges(keys=True)} == {"r1", "r2"}


def test_neighbors_within_scores_the_best_path_with_hop_decay() -> None:
    graph = chain_graph()
    scores = neighbors_within(graph, ["a"], hops=2)
    assert scores["a"] == 1.0
    assert scores["b"] == pytest.approx(0.9)  # a direct neighbour scores its edge
    assert scores["e"] == pytest.approx(0.4)  # edges count in both directions
    assert scores["c"] == pytest.approx(0.9 * 0.8 * 0.5)  # second hop decays
    assert "d" not in scores  # three hops away
    assert list(scores) == ["a", "b", "e", "c"]  # best first

    three = neighbors_within(graph, ["a"], hops=3, hop_decay=1.0)
    assert three["d"] == pytest.approx(0.9 * 0.8 * 0.9)


def test_neighbors_within_prefers_the_stronger_path() -> None:
    nodes = [GraphNode(n, n, n, "KEYPHRASE") for n in "sxyt"]
    edges = [
        GraphEdge("1", "s", "x", "Uses", 0.3),
        GraphEdge("2", "x", "t", "Uses", 0.9),
        GraphEdge("3", "s", "y", "Uses", 0.9),
        GraphEdge("4", "y", "t", "Uses", 0.8),
        GraphEdge("5", "s", "t", "RelatedTo", 0.2),  # direct but weak
        GraphEdge("6", "s", "t", "RelatedTo", 0.1),  # a weaker parallel edge
    ]
    scores = neighbors_within(build_graph(nodes, edges), ["s"], hops=2, hop_decay=0.5)
    assert scores["t"] == pytest.approx(max(0.2, 0.9 * 0.8 * 0.5))


def test_neighbors_within_min_strength_and_edge_cases() -> None:
    graph = chain_graph()
    strong = neighbors_within(graph, ["a"], hops=2, min_strength=0.85)
    assert strong == {"a": 1.0, "b": pytest.approx(0.9)}  # b -> c (0.8) and e (0.4) are too weak
    assert neighbors_within(graph, ["a"], hops=0) == {"a": 1.0}
    assert neighbors_within(graph, ["missing"], hops=2) == {}
    both = neighbors_within(graph, ["a", "d"], hops=1)
    assert both["c"] == pytest.approx(0.9) and both["a"] == both["d"] == 1.0
    with pytest.raises(ValueError):
        neighbors_within(graph, ["a"], hops=-1)


def test_link_graph_collapses_parallel_relations_to_the_strongest_in_both_directions() -> None:
    nodes = [GraphNode(n, n, n.upper(), "KEYPHRASE", i) for i, n in enumerate("abcd")]
    links = [
        ("a", "b", 0.3),
        ("b", "a", 0.7),  # the same pair the other way: one link, its strongest value
        ("a", "b", 0.5),
        ("a", "c", 0.7),  # ties with b: the larger id first
        ("a", "a", 1.0),  # a self-loop links nothing
        ("a", "zz", 1.0),  # an entity outside the collection (or deleted meanwhile)
        ("c", "d", 0.2),
    ]
    graph = LinkGraph(nodes, links)
    assert graph.number_of_nodes() == 4 and graph.number_of_edges() == 3
    assert graph.strongest_links("a") == [("c", 0.7), ("b", 0.7)]
    assert graph.strongest_links("b") == [("a", 0.7)]
    assert graph.strongest_links("c") == [("a", 0.7), ("d", 0.2)]
    assert graph.strongest_links("c", 1) == [("a", 0.7)] and graph.strongest_links("c", 0) == []
    assert graph.strongest_links("zz") == [] and "zz" not in graph and "a" in graph
    assert graph.mention_count("d") == 3 and graph.mention_count("zz") == 0
    assert graph.names == ["A", "B", "C", "D"] and graph.keys == ["a", "b", "c", "d"]


def test_link_graph_of_a_networkx_graph_has_its_strongest_links() -> None:
    graph = chain_graph()
    graph.add_edge("b", "a", key="r5", type="RelatedTo", strength=0.95)  # parallel to r1, stronger
    links = LinkGraph.from_graph(graph)
    assert links.number_of_nodes() == 5 and links.number_of_edges() == 4
    for node in "abcde":
        expected = sorted(neighbors_within(graph, [node], hops=1).items(), key=lambda kv: (-kv[1], kv[0]))
        assert sorted(links.strongest_links(node), key=lambda kv: (-kv[1], kv[0])) == expected[1:]  # minus the seed


def test_link_graph_of_nothing() -> None:
    empty = LinkGraph([], [])
    assert empty.number_of_nodes() == 0 and empty.number_of_edges() == 0 and empty.strongest_links("a") == []


class _NameCounter:
    """A deterministic name embedder (the Embedder protocol) that records what it embeds."""

    name = "counter"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.texts: list[str] = []

    def embed(self, texts):  # type: ignore[no-untyped-def]
        import numpy as np

        self.texts.extend(texts)
        rows = [np.random.default_rng(sum(map(ord, t))).standard_normal(self.dim) for t in texts]
        return np.asarray([r / np.linalg.norm(r) for r in rows], dtype=np.float32)


def test_each_distinct_name_is_embedded_once_per_collection(ledger_url: str) -> None:
    from kag.ledger import Ledger
    from kag.records import ChunkDraft, EntityRecord, GraphExtraction, MentionRecord
    from kag.stores.graph import decode_vector, embed_entity_names

    ledger = Ledger(ledger_url)
    ledger.ensure_collection("bio")

    def write(source: str, *entities: tuple[str, str]) -> None:
        ledger.write_document(
            collection="bio",
            source_uri=source,
            sha256=source.ljust(64, "0")[:64],
            mime_type="text/plain",
            title="t",
            text="T cells and B cells.",
            size_bytes=20,
            metadata={},
            chunks=[ChunkDraft(0, "T cells and B cells.", 0, 20, 5)],
            graph=GraphExtraction(
                entities=tuple(EntityRecord(k, n, "KEYPHRASE") for k, n in entities),
                mentions=tuple(MentionRecord(k, 0, 0, 7) for k, _ in entities),
            ),
        )

    # two keys, one name ("T cells"): one embedding
    write("/a.txt", ("t cell", "T cells"), ("t cells", "T cells"), ("b cell", "B cells"))
    names = _NameCounter(8)
    assert embed_entity_names(ledger, names, "bio") == 3
    assert sorted(names.texts) == ["B cells", "T cells"]
    # a later job: stored names are looked up, never embedded again; only the new name is
    write("/b.txt", ("b cell", "B cells"), ("t-cell", "T cells"), ("nk cell", "NK cells"))
    assert embed_entity_names(ledger, names, "bio") == 2
    assert sorted(names.texts) == ["B cells", "NK cells", "T cells"]
    assert embed_entity_names(ledger, names, "bio") == 0
    entities, _, _, vectors = ledger.graph_links("bio")
    by_id = dict(vectors)
    t_cells = {by_id[e[0]] for e in entities if e[2] == "T cells"}
    assert len(t_cells) == 1 and len(decode_vector(t_cells.pop())) == 8
    # another name embedder (another dimension) re-embeds every name once, and replaces the old vectors
    other = _NameCounter(4)
    assert embed_entity_names(ledger, other, "bio") == 5
    assert sorted(other.texts) == ["B cells", "NK cells", "T cells"]
    assert {len(decode_vector(b)) for _, b in ledger.graph_links("bio")[3]} == {4}
    ledger.close()
