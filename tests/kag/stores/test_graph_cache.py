"""GraphCache over a real ledger (SQLite and PostgreSQL): memory cap, LRU eviction, reload, staleness."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from kag.ledger import Ledger
from kag.records import ChunkDraft, EntityRecord, GraphExtraction, MentionRecord, RelationRecord
from kag.stores.graph import GraphCache
from pipelines.retrieve import GraphRetriever


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url)
    yield ledger
    ledger.close()


def write(ledger: Ledger, collection: str, source: str, keys: Sequence[str]) -> str:
    """One document whose one chunk mentions `keys`, chained by DependsOn relations."""
    text = " ".join(keys)
    chunk = ChunkDraft(0, text, 0, len(text), len(keys))
    starts = [text.index(k) for k in keys]
    graph = GraphExtraction(
        entities=tuple(EntityRecord(k, k.title(), "KEYPHRASE") for k in keys),
        mentions=tuple(MentionRecord(k, 0, s, s + len(k)) for k, s in zip(keys, starts, strict=True)),
        relations=tuple(
            RelationRecord(a, b, "DependsOn", 0.9, 0, 0, len(text)) for a, b in zip(keys, keys[1:], strict=False)
        ),
    )
    ledger.ensure_collection(collection)
    written = ledger.write_document(
        collection=collection,
        source_uri=source,
        sha256="0" * 64,
        mime_type="text/plain",
        title=source,
        text=text,
        size_bytes=len(text),
        metadata={},
        chunks=[chunk],
        graph=graph,
    )
    ledger.mark_indexed([written.document_id])
    return written.document_id


class KeysInQuery:
    """A QueryEntityExtractor that links the query's words to entity keys (the real protocol)."""

    def extract(self, chunks: Sequence[ChunkDraft]) -> GraphExtraction:
        words = {w.strip("?.,").lower() for c in chunks for w in c.text.split()}
        return GraphExtraction(entities=tuple(EntityRecord(w, w, "KEYPHRASE") for w in sorted(words)))


def test_least_recently_used_graph_is_evicted_and_reloads_the_same(ledger: Ledger) -> None:
    write(ledger, "a", "a.txt", ["heron", "postgres", "kafka"])  # 3 nodes + 2 edges = 5 elements
    write(ledger, "b", "b.txt", ["magpie", "rabbitmq", "tls"])
    write(ledger, "c", "c.txt", ["osprey", "redis", "gateway"])
    cache = GraphCache(ledger, max_elements=10, check_seconds=0)
    retriever = GraphRetriever(KeysInQuery(), cache, hops=2)

    before = {c: retriever.retrieve(f"what does {k} use", 10, [c]) for c, k in [("a", "heron"), ("b", "magpie")]}
    assert all(before.values())
    assert cache.cached() == ["a", "b"] and cache.elements == 10 and cache.loads == 2

    first_c = retriever.retrieve("osprey", 10, ["c"])
    assert cache.cached() == ["b", "c"] and cache.evictions == 1  # "a" was least recently used
    assert cache.elements <= cache.max_elements

    cache.get("b")  # a hit: no reload, "b" becomes most recently used
    assert cache.loads == 3
    assert retriever.retrieve("what does heron use", 10, ["a"]) == before["a"]  # reloaded, same answer
    assert cache.loads == 4 and cache.cached() == ["b", "a"]
    assert retriever.retrieve("osprey", 10, ["c"]) == first_c
    assert retriever.retrieve("what does magpie use", 10, ["b"]) == before["b"]


def test_writes_and_deletes_are_seen_without_an_explicit_invalidate(ledger: Ledger) -> None:
    write(ledger, "a", "a.txt", ["heron", "postgres"])
    cache = GraphCache(ledger, max_elements=100, check_seconds=0)
    keys = set(cache.get("a").keys)
    assert keys == {"heron", "postgres"}

    doc = write(ledger, "a", "b.txt", ["postgres", "pgbouncer"])  # another process could have written this
    assert set(cache.get("a").keys) == {"heron", "postgres", "pgbouncer"}
    ledger.delete_document(doc)
    assert set(cache.get("a").keys) == {"heron", "postgres"}
    assert cache.loads == 3


def test_a_fresh_graph_is_reused_until_the_check_interval_or_an_invalidate(ledger: Ledger) -> None:
    write(ledger, "a", "a.txt", ["heron", "postgres"])
    cache = GraphCache(ledger, max_elements=100, check_seconds=3600)
    assert cache.get("a").number_of_nodes() == 2
    write(ledger, "a", "b.txt", ["kafka"])
    assert cache.get("a").number_of_nodes() == 2  # within the interval: the ledger is not asked
    cache.invalidate("a")
    assert cache.get("a").number_of_nodes() == 3
    cache.invalidate()
    assert cache.cached() == []


def test_a_graph_larger_than_the_cap_is_served_but_not_kept(ledger: Ledger) -> None:
    write(ledger, "big", "big.txt", ["a1", "a2", "a3", "a4"])  # 4 nodes + 3 edges
    write(ledger, "small", "s.txt", ["b1"])
    cache = GraphCache(ledger, max_elements=5, check_seconds=0)
    cache.get("small")
    graph = cache.get("big")
    assert graph.number_of_nodes() == 4 and graph.number_of_edges() == 3
    assert cache.cached() == ["small"]  # the big one did not push the small one out
    zero = GraphCache(ledger, max_elements=0)
    assert zero.get("small").number_of_nodes() == 1 and zero.cached() == []
    with pytest.raises(ValueError):
        GraphCache(ledger, max_elements=-1)


def test_unknown_collection_is_an_empty_graph(ledger: Ledger) -> None:
    cache = GraphCache(ledger, max_elements=10, check_seconds=0)
    assert cache.get("nothing").number_of_nodes() == 0
