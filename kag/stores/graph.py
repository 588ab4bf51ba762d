"""The knowledge graph: a networkx MultiDiGraph built from the ledger's entities and relations."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np

log = logging.getLogger("kag.graph")

#: The relation ontology: group -> relation types. RelatedTo is the untyped co-occurrence link.
RELATION_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "hierarchy": ("IsA", "PartOf", "InstanceOf"),
        "function": ("Causes", "Enables", "Prevents", "Requires"),
        "structure": ("Contains", "Composes", "DependsOn", "Connects"),
        "semantics": ("SimilarTo", "OppositeTo", "Influences", "RelatedTo"),
        "technique": ("Implements", "Extends", "Uses", "Optimizes"),
    }
)
#: Every relation type, in ontology order.
RELATION_TYPES: tuple[str, ...] = tuple(t for types in RELATION_GROUPS.values() for t in types)


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One entity row: a node of the graph."""

    entity_id: str
    key: str
    name: str
    label: str
    mention_count: int = 0


@dataclass(frozen=True, slots=True)
class GraphEdge:
    """One relation row: an edge of the graph, keyed by relation_id."""

    relation_id: str
    source_entity_id: str
    target_entity_id: str
    type: str
    strength: float
    chunk_id: str | None = None
    #: offsets of the evidencing sentence in the document text (not the chunk's)
    evidence_start: int | None = None
    evidence_end: int | None = None
    created_at: datetime | None = None


def _coerce(row: Any, cls: type[Any]) -> Any:
    """A GraphNode/GraphEdge from itself, an object with those attribute names, or a plain tuple."""
    if isinstance(row, cls):
        return row
    names = [f.name for f in fields(cls)]
    if hasattr(row, names[0]):  # ORM objects, named tuples, SQLAlchemy rows with labelled columns
        return cls(**{n: getattr(row, n) for n in names if hasattr(row, n)})
    return cls(*row)


def build_graph(entities: Iterable[Any], relations: Iterable[Any]) -> nx.MultiDiGraph:
    """A MultiDiGraph with one node per entity and one edge per relation (edge key = relation id)."""
    graph = nx.MultiDiGraph()
    for row in entities:
        node: GraphNode = _coerce(row, GraphNode)
        graph.add_node(node.entity_id, key=node.key, name=node.name, label=node.label, mentions=node.mention_count)
    for row in relations:
        edge: GraphEdge = _coerce(row, GraphEdge)
        if edge.source_entity_id not in graph or edge.target_entity_id not in graph:
            # The ledger is the truth; an edge to an entity outside this load (another collection,
            # or deleted meanwhile) would otherwise appear as an attribute-less node.
            continue
        graph.add_edge(
            edge.source_entity_id,
            edge.target_entity_id,
            key=edge.relation_id,
            type=edge.type,
            strength=float(edge.strength),
            chunk_id=edge.chunk_id,
            evidence_start=edge.evidence_start,
            evidence_end=edge.evidence_end,
            created_at=edge.created_at,
        )
    return graph


def neighbors_within(
    graph: nx.MultiDiGraph,
    entity_ids: Iterable[str],
    hops: int = 2,
    min_strength: float = 0.0,
    *,
    hop_decay: float = 0.5,
) -> dict[str, float]:
    """Entities reachable from the seeds within `hops` edges, best score first; seeds score 1.0.

    A path's score is the product of its edge strengths times hop_decay for every hop after the
    first, so a direct neighbour scores its edge's strength. Edges count in both directions,
    parallel edges by their strongest, and edges weaker than min_strength not at all.
    """
    if hops < 0:
        raise ValueError("hops must be >= 0")
    if not 0.0 <= hop_decay <= 1.0:
        raise ValueError("hop_decay must be in [0, 1]")
    best: dict[str, float] = {e: 1.0 for e in entity_ids if e in graph}
    frontier = dict(best)
    for hop in range(hops):
        factor = 1.0 if hop == 0 else hop_decay
        reached: dict[str, float] = {}
        for node, score in frontier.items():
            for neighbor, strength in _strongest_links(graph, node, min_strength).items():
                candidate = score * strength * factor
                if candidate > best.get(neighbor, 0.0) and candidate > reached.get(neighbor, 0.0):
                    reached[neighbor] = candidate
        # Only nodes whose score improved need expanding again: any other node was expanded
        # earlier with a higher score and at least as many hops left.
        best.update(reached)
        frontier = reached
        if not frontier:
            break
    return dict(sorted(best.items(), key=lambda item: (-item[1], item[0])))


def _strongest_links(graph: nx.MultiDiGraph, node: str, min_strength: float) -> dict[str, float]:
    links: dict[str, float] = {}
    for adjacency in (graph.succ[node], graph.pred[node]):
        for neighbor, edges in adjacency.items():
            if neighbor == node:
                continue
            for attrs in edges.values():
                strength = float(attrs.get("strength", 0.0))
                if strength >= min_strength and strength > links.get(neighbor, 0.0):
                    links[neighbor] = strength
    return links


def load_graph(ledger: Any, collection: str) -> nx.MultiDiGraph:
    """Build one collection's graph from the ledger's entity and relation rows."""
    entities, relations = ledger.graph_rows(collection)
    return build_graph(entities, relations)


class LinkGraph:
    """A compact, read-only view of one collection's graph, for retrieval: every entity; for each its
    neighbours over relations in either direction, parallel relations collapsed to the strongest,
    sorted strongest first (ties: larger entity id first); and the chunks that mention it. All in
    CSR arrays, so a graph query never goes back to the database.

    A link costs 24 bytes here (both directions) against about 1 KB for a networkx edge with
    attributes, a mention 4, and the database aggregates parallel relations before they reach
    Python, so a collection whose MultiDiGraph would not fit in memory still does (`kag doctor`
    builds the full graph; retrieval never needs relation ids or evidence).
    """

    __slots__ = (
        "__weakref__",
        "_chunk_docs",
        "_chunks",
        "_indices",
        "_indptr",
        "_postings",
        "_postings_ptr",
        "_strengths",
        "_vector_rows",
        "_vectors",
        "ids",
        "keys",
        "mentions",
        "names",
        "position",
    )

    def __init__(
        self,
        entities: Iterable[Any],
        links: Iterable[tuple[str, str, float]],
        mentions: Iterable[tuple[str, str, str]] = (),
        vectors: Iterable[tuple[str, bytes]] = (),
    ) -> None:
        nodes = sorted((_coerce(row, GraphNode) for row in entities), key=lambda n: n.entity_id)
        self.ids: list[str] = [n.entity_id for n in nodes]
        self.keys: list[str] = [n.key for n in nodes]
        self.names: list[str] = [n.name or n.key for n in nodes]
        self.mentions = np.fromiter((int(n.mention_count or 0) for n in nodes), dtype=np.int64, count=len(nodes))
        self.position: dict[str, int] = {e: i for i, e in enumerate(self.ids)}
        src, dst, strength = [], [], []
        for source, target, value in links:
            a, b = self.position.get(source), self.position.get(target)
            if a is None or b is None or a == b:
                continue  # an entity outside this collection (or deleted meanwhile), or a self-loop
            src.append(a)
            dst.append(b)
            strength.append(float(value))
        rows = np.asarray(src + dst, dtype=np.int32)
        cols = np.asarray(dst + src, dtype=np.int32)
        values = np.asarray(strength + strength, dtype=np.float64)
        # keep each (row, col) once, by its strongest value: sort so it comes first, then drop the rest
        order = np.lexsort((-values, cols, rows))
        rows, cols, values = rows[order], cols[order], values[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        rows, cols, values = rows[first], cols[first], values[first]
        # then each row strongest first, ties by the larger id (positions follow sorted ids)
        order = np.lexsort((-cols, -values, rows))
        self._indices, self._strengths = cols[order], values[order]
        self._indptr = np.zeros(len(self.ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(self.ids)), out=self._indptr[1:])
        self._index_mentions(mentions)
        self._index_vectors(vectors)

    def _index_vectors(self, vectors: Iterable[tuple[str, bytes]]) -> None:
        """Stored name vectors (float16), one matrix row per entity that has one; the first vector's
        length fixes the dimension and a vector of another length is left out (a model change)."""
        rows: dict[int, int] = {}
        stacked: list[np.ndarray] = []
        dim = None
        for entity_id, blob in vectors:
            e = self.position.get(entity_id)
            if e is None or not blob:
                continue
            vector = decode_vector(blob)
            dim = dim or len(vector)
            if len(vector) == dim:
                rows[e] = len(stacked)
                stacked.append(vector)
        self._vector_rows = rows
        self._vectors = np.stack(stacked) if stacked else np.zeros((0, 0), dtype=np.float16)

    def has_name_vector(self, entity_id: str) -> bool:
        return self.position.get(entity_id, -1) in self._vector_rows

    def name_vector(self, entity_id: str) -> np.ndarray | None:
        """The entity's stored name vector (float32), or None when its name has not been embedded."""
        row = self._vector_rows.get(self.position.get(entity_id, -1))
        return None if row is None else self._vectors[row].astype(np.float32)

    @property
    def vector_dim(self) -> int:
        """Dimension of the stored name vectors (0 when none is stored)."""
        return int(self._vectors.shape[1]) if len(self._vector_rows) else 0

    def number_of_vectors(self) -> int:
        return len(self._vector_rows)

    def _index_mentions(self, mentions: Iterable[tuple[str, str, str]]) -> None:
        """Postings: entity -> the chunks mentioning it (a chunk once per mention), and each chunk's document."""
        chunk_position: dict[str, int] = {}
        self._chunks: list[str] = []
        self._chunk_docs: list[str] = []
        owners, chunks = [], []
        for entity_id, chunk_id, document_id in mentions:
            e = self.position.get(entity_id)
            if e is None:
                continue
            c = chunk_position.get(chunk_id)
            if c is None:
                c = chunk_position[chunk_id] = len(self._chunks)
                self._chunks.append(chunk_id)
                self._chunk_docs.append(document_id)
            owners.append(e)
            chunks.append(c)
        owner = np.asarray(owners, dtype=np.int32)
        order = np.argsort(owner, kind="stable")
        self._postings = np.asarray(chunks, dtype=np.int32)[order]
        self._postings_ptr = np.zeros(len(self.ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=len(self.ids)), out=self._postings_ptr[1:])

    def number_of_chunks(self) -> int:
        """Chunks that mention any entity."""
        return len(self._chunks)

    def chunk_scores(
        self, weights: Mapping[str, float], k: int, document_ids: Collection[str] | None = None
    ) -> list[tuple[str, float, str]]:
        """(chunk id, score, document id) of the k chunks with the highest summed weight of the entities
        they mention (once per mention), best first (ties: larger chunk id first); only chunks of
        `document_ids` when given."""
        if k <= 0 or not weights:
            return []
        parts, values = [], []
        for entity_id, weight in weights.items():
            e = self.position.get(entity_id)
            if e is not None:
                postings = self._postings[self._postings_ptr[e] : self._postings_ptr[e + 1]]
                parts.append(postings)
                values.append(np.full(len(postings), weight, dtype=np.float64))
        if not parts:
            return []
        chunks = np.concatenate(parts)
        found, inverse = np.unique(chunks, return_inverse=True)
        totals = np.bincount(inverse, weights=np.concatenate(values))
        if document_ids is not None:
            allowed = set(document_ids)
            docs = self._chunk_docs
            keep = np.fromiter((docs[c] in allowed for c in found.tolist()), dtype=bool, count=len(found))
            found, totals = found[keep], totals[keep]
        if len(found) > k:
            # everything scoring at least the k-th best, ties included, then the exact order in Python
            threshold = np.partition(totals, len(totals) - k)[len(totals) - k]
            keep = totals >= threshold
            found, totals = found[keep], totals[keep]
        names, docs = self._chunks, self._chunk_docs
        scored = [(names[c], t, docs[c]) for c, t in zip(found.tolist(), totals.tolist(), strict=True)]
        return heapq.nlargest(k, scored, key=lambda kv: (kv[1], kv[0]))

    @classmethod
    def from_graph(cls, graph: nx.MultiDiGraph) -> LinkGraph:
        """The link view of a networkx graph built by `build_graph`."""
        entities = [
            GraphNode(
                n, str(d.get("key") or ""), str(d.get("name") or ""), str(d.get("label") or ""), d.get("mentions", 0)
            )
            for n, d in graph.nodes(data=True)
        ]
        links = [(u, v, float(d.get("strength", 0.0))) for u, v, d in graph.edges(data=True)]
        return cls(entities, links)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self.position

    def number_of_nodes(self) -> int:
        return len(self.ids)

    def number_of_edges(self) -> int:
        """Linked pairs of entities (each pair once, however many relations join it)."""
        return len(self._indices) // 2

    def name(self, entity_id: str) -> str:
        return self.names[self.position[entity_id]]

    def mention_count(self, entity_id: str) -> int:
        i = self.position.get(entity_id)
        return 0 if i is None else int(self.mentions[i])

    def strongest_links(self, entity_id: str, limit: int | None = None) -> list[tuple[str, float]]:
        """The entity's neighbours with the strength of their strongest relation, strongest first."""
        i = self.position.get(entity_id)
        if i is None:
            return []
        start, end = int(self._indptr[i]), int(self._indptr[i + 1])
        if limit is not None:
            end = min(end, start + max(limit, 0))
        ids = self.ids
        return list(
            zip([ids[j] for j in self._indices[start:end].tolist()], self._strengths[start:end].tolist(), strict=True)
        )


def load_links(ledger: Any, collection: str) -> LinkGraph:
    """One collection's link view from the ledger, parallel relations aggregated in SQL."""
    entities, links, mentions, vectors = ledger.graph_links(collection)
    return LinkGraph(entities, links, mentions, vectors)


def encode_vector(vector: np.ndarray) -> bytes:
    """A name vector as the ledger stores it: float16, little-endian (768 bytes at 384 dimensions)."""
    return np.asarray(vector, dtype="<f2").tobytes()


def decode_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f2")


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """Vectors rounded as the ledger stores them (float16), back in float32: a vector embedded at query
    time then scores exactly as the stored one would."""
    return np.asarray(vectors, dtype="<f2").astype(np.float32)


def embed_entity_names(ledger: Any, embedder: Any, collection: str, *, batch_size: int = 512) -> int:
    """Embed the names of the collection's entities that have no stored vector from this embedder yet
    (none, or one of another size: another name embedder), and store them; returns how many entities
    got a vector. Each distinct name is embedded once per collection: names already stored for another
    entity of the collection, and names repeated among the missing entities, are looked up, not
    embedded. Runs once at the end of an ingestion job (and after `kag reindex` clears them), so
    query-time linking reads vectors instead of running the model over candidate names. A crash
    before it runs leaves names unembedded, which the next job picks up (and the retriever embeds
    any it meets meanwhile)."""
    vector_bytes = 2 * int(embedder.dim)  # float16
    missing = ledger.entities_without_vectors(collection, vector_bytes)
    if not missing:
        return 0
    stored: dict[str, bytes] = ledger.vectors_by_name(collection, {name for _, name in missing}, vector_bytes)
    todo = [name for name in dict.fromkeys(name for _, name in missing) if name not in stored]
    for start in range(0, len(todo), batch_size):
        part = todo[start : start + batch_size]
        stored.update(zip(part, (encode_vector(v) for v in embedder.embed(part)), strict=True))
    for start in range(0, len(missing), batch_size):
        ledger.set_entity_vectors({e: stored[name] for e, name in missing[start : start + batch_size]})
    return len(missing)


@dataclass(slots=True)
class _CachedGraph:
    graph: LinkGraph
    stamp: Any
    elements: int
    checked_at: float


class GraphCache:
    """Per-collection link graphs (`LinkGraph`) loaded from the ledger on demand, within a memory cap,
    least recently used evicted first.

    The cap counts entities + linked pairs. Measured: an entity costs about 0.8 KB (its id, key and
    name strings and the retriever's lookup tables) plus its stored name vector (768 bytes at 384
    float16 dimensions), a link 24 bytes; a graph shaped like SciFact's (8 links per entity)
    averages about 200 bytes per element, so the default 8,000,000 is about 1.6 GB and holds the
    graph of a 100k-chunk corpus of that shape. A cached graph is reused while
    the ledger's stamp of its collection (document count and latest update) is unchanged, so
    writes from any process, another API replica or a Ray ingestion driver, are seen within
    `check_seconds`; writes through this process can `invalidate` at once. Name vectors are
    stored at the end of a job, after the stamp changed: a graph loaded in between lacks them until
    the next reload, and the retriever embeds those names on use (same result, slower).
    A graph larger than the whole cap is served but not kept. The mention postings are not
    counted: 4 bytes per mention plus a chunk id per mentioning chunk, small beside the entities.
    """

    def __init__(self, ledger: Any, *, max_elements: int = 8_000_000, check_seconds: float = 5.0) -> None:
        if max_elements < 0 or check_seconds < 0:
            raise ValueError("max_elements and check_seconds must be >= 0")
        self.ledger = ledger
        self.max_elements = max_elements
        self.check_seconds = check_seconds
        self._graphs: OrderedDict[str, _CachedGraph] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    def get(self, collection: str) -> LinkGraph:
        """The collection's graph, from memory when it is still current, else reloaded from the ledger."""
        now = time.monotonic()
        with self._lock:
            entry = self._graphs.get(collection)
            if entry is not None:
                self._graphs.move_to_end(collection)
                if now - entry.checked_at < self.check_seconds:
                    return entry.graph
        stamp = self.ledger.graph_stamp(collection)
        if entry is not None and entry.stamp == stamp:
            entry.checked_at = now
            return entry.graph
        # read the stamp before the rows: a write in between makes the next check reload again
        graph = load_links(self.ledger, collection)
        elements = graph.number_of_nodes() + graph.number_of_edges()
        with self._lock:
            self.loads += 1
            self._graphs.pop(collection, None)
            if elements > self.max_elements:
                log.warning(
                    "graph larger than the cache cap; served without caching",
                    extra={"collection": collection, "elements": elements, "max_elements": self.max_elements},
                )
                return graph
            self._graphs[collection] = _CachedGraph(graph, stamp, elements, now)
            while self.elements > self.max_elements:
                evicted, _ = self._graphs.popitem(last=False)
                self.evictions += 1
                log.info("graph evicted", extra={"collection": evicted})
        return graph

    @property
    def elements(self) -> int:
        """Nodes + edges of every cached graph."""
        return sum(e.elements for e in self._graphs.values())

    def cached(self) -> list[str]:
        """Cached collections, least recently used first."""
        with self._lock:
            return list(self._graphs)

    def invalidate(self, collection: str | None = None) -> None:
        with self._lock:
            if collection is None:
                self._graphs.clear()
            else:
                self._graphs.pop(collection, None)
