"""Shared BM25: chunk term weights as Qdrant sparse vectors, IDF applied by Qdrant at query time.

Every API replica and every ingestion driver writes and reads one lexical index in the Qdrant
server, instead of a Tantivy folder per node. Scores follow Tantivy's BM25 (k1=1.2, b=0.75,
idf = ln(1 + (N - n + 0.5) / (n + 0.5)), title boosted) over the same analysis (simple tokenizer,
lowercase, English Porter stemmer), so the two backends rank alike:

- a point's sparse vector holds, per analyzed term, the BM25 term-frequency part
  tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len)), one dimension per (field, term):
  body terms, title terms, and body bigrams (for quoted phrases);
- the collection's sparse vector has `Modifier.IDF`, so Qdrant multiplies each query dimension
  by the IDF of that dimension over the whole collection, as Tantivy does per field;
- a query is one dimension per distinct query term in each field (title weighted by
  `title_boost`), plus the bigrams of quoted phrases; the dot product is the BM25 sum.

What differs from Tantivy: the average length is a fixed setting (Qdrant cannot re-weight stored
points when it drifts; fastembed's Bm25 makes the same choice), Tantivy quantizes lengths to one
byte, and a quoted phrase is scored by its bigrams instead of exact positions.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from kag.errors import StoreError
from kag.ids import point_id
from kag.records import IndexedChunk, ScoredChunk
from kag.stores.fulltext import _PHRASE, MAX_QUERY_TERMS, _query_analyzer
from kag.stores.vector import FILTER_FIELDS, _store_errors, scroll_chunk_ids

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

#: the one named sparse vector of every point
SPARSE_NAME = "bm25"
K1 = 1.2
B = 0.75

_UPSERT_BATCH = 512
_REINDEX_HINT = "run `kag reindex` to rebuild the lexical index from the ledger"


def term_dimension(key: str) -> int:
    """A stable uint32 dimension for a field-qualified term (same on every node and every run)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big")


def _bm25_tf(tf: int, length: int, avg_length: float) -> float:
    return tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / avg_length))


def _merge(weights: dict[str, float]) -> tuple[list[int], list[float]]:
    """Field-qualified term weights -> sorted sparse indices/values (hash collisions add up)."""
    merged: dict[int, float] = {}
    for key, weight in weights.items():
        dim = term_dimension(key)
        merged[dim] = merged.get(dim, 0.0) + weight
    indices = sorted(merged)
    return indices, [merged[i] for i in indices]


class QdrantBM25Index:
    """BM25 over chunk title + text as sparse vectors in a Qdrant collection (server, or local mode in tests).

    `add` is staged and becomes visible at `commit`, deletes take effect at once: the same
    visibility as `TantivyIndex`, so the ingestion write order is the same for both backends.
    """

    def __init__(
        self,
        client: QdrantClient,
        collection_name: str = "kag_lexical",
        *,
        avg_text_tokens: float = 100.0,
        avg_title_tokens: float = 8.0,
        title_boost: float = 0.5,
        owns_client: bool = False,
        reset: bool = False,
    ) -> None:
        from qdrant_client import models

        if avg_text_tokens <= 0 or avg_title_tokens <= 0:
            raise StoreError("average token counts for BM25 must be positive")
        self._models = models
        self._client: QdrantClient | None = client
        self.collection_name = collection_name
        self.avg_text_tokens = avg_text_tokens
        self.avg_title_tokens = avg_title_tokens
        self.title_boost = title_boost
        self._owns_client = owns_client
        self._analyzer = _query_analyzer()
        self._staged: dict[str, IndexedChunk] = {}
        with _store_errors("open the Qdrant lexical collection", collection=collection_name):
            if reset and client.collection_exists(collection_name):
                client.delete_collection(collection_name)
            self._ensure_collection()

    # -- lifecycle -------------------------------------------------------------------------

    def _live(self) -> QdrantClient:
        if self._client is None:
            raise StoreError("the lexical index is closed", collection=self.collection_name)
        return self._client

    def _ensure_collection(self) -> None:
        client, m, name = self._live(), self._models, self.collection_name
        if not client.collection_exists(name):
            try:
                client.create_collection(
                    name,
                    vectors_config={},
                    sparse_vectors_config={SPARSE_NAME: m.SparseVectorParams(modifier=m.Modifier.IDF)},
                )
            except Exception:
                if not client.collection_exists(name):  # another process may have won the race
                    raise
        with warnings.catch_warnings():
            # local mode (tests) warns that payload indexes are no-ops there; a server uses them
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field in (*FILTER_FIELDS, "chunk_id"):
                client.create_payload_index(name, field, m.PayloadSchemaType.KEYWORD, wait=True)
        sparse = client.get_collection(name).config.params.sparse_vectors or {}
        params = sparse.get(SPARSE_NAME)
        if params is None or params.modifier != m.Modifier.IDF:
            raise StoreError(
                f"Qdrant collection {name!r} has no sparse vector {SPARSE_NAME!r} with the IDF modifier",
                hint="point KAG_QDRANT_LEXICAL_COLLECTION at a collection created by kag, or " + _REINDEX_HINT,
                collection=name,
            )

    def close(self) -> None:
        """Commit staged writes and release the client."""
        if self._client is None:
            return
        try:
            self.commit()
        finally:
            client, self._client = self._client, None
            if self._owns_client:
                with _store_errors("close the Qdrant client", collection=self.collection_name):
                    client.close()

    def __enter__(self) -> QdrantBM25Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- analysis --------------------------------------------------------------------------

    def _tokens(self, text: str) -> list[str]:
        return list(self._analyzer.analyze(text))

    def document_vector(self, chunk: IndexedChunk) -> tuple[list[int], list[float]]:
        """The sparse BM25 term-frequency vector of one chunk (IDF comes from Qdrant)."""
        body = self._tokens(chunk.text)
        title = self._tokens(chunk.title)
        weights: dict[str, float] = {}
        for term, tf in Counter(body).items():
            weights["b:" + term] = _bm25_tf(tf, len(body), self.avg_text_tokens)
        for term, tf in Counter(title).items():
            weights["t:" + term] = _bm25_tf(tf, len(title), self.avg_title_tokens)
        bigrams = Counter(f"{a} {b}" for a, b in zip(body, body[1:], strict=False))
        for bigram, tf in bigrams.items():
            weights["p:" + bigram] = _bm25_tf(tf, max(len(body) - 1, 1), self.avg_text_tokens)
        return _merge(weights)

    def query_vector(self, query: str) -> tuple[list[int], list[float]]:
        """One dimension per distinct query term per field, plus the bigrams of quoted phrases."""
        terms = list(dict.fromkeys(self._tokens(query)))[:MAX_QUERY_TERMS]
        weights: dict[str, float] = {}
        for term in terms:
            weights["b:" + term] = 1.0
            if self.title_boost > 0:
                weights["t:" + term] = self.title_boost
        for phrase in _PHRASE.findall(query):
            words = self._tokens(phrase)
            for a, b in zip(words, words[1:], strict=False):
                weights[f"p:{a} {b}"] = 1.0
        return _merge(weights) if terms else ([], [])

    # -- writes ----------------------------------------------------------------------------

    def add(self, chunks: Sequence[IndexedChunk]) -> None:
        """Stage chunks; an already indexed chunk id is replaced at `commit`, never duplicated."""
        self._live()
        for chunk in chunks:
            self._staged[chunk.chunk_id] = chunk

    def commit(self) -> None:
        """Upsert every staged chunk; they are searchable once this returns."""
        if not self._staged:
            return
        m = self._models
        staged = list(self._staged.values())
        with _store_errors("upsert lexical vectors", collection=self.collection_name):
            client = self._live()
            for start in range(0, len(staged), _UPSERT_BATCH):
                points = []
                for chunk in staged[start : start + _UPSERT_BATCH]:
                    indices, values = self.document_vector(chunk)
                    points.append(
                        m.PointStruct(
                            id=point_id(chunk.chunk_id),
                            vector={SPARSE_NAME: m.SparseVector(indices=indices, values=values)},
                            payload={
                                "collection": chunk.collection,
                                "document_id": chunk.document_id,
                                "chunk_id": chunk.chunk_id,
                            },
                        )
                    )
                client.upsert(self.collection_name, points=points, wait=True)
        self._staged.clear()

    def _delete_where(self, field: str, values: Sequence[str], action: str) -> None:
        if not values:
            return
        # a delete also hits chunks staged before it (as in Tantivy), so stage them in first
        self.commit()
        m = self._models
        flt = m.Filter(must=[m.FieldCondition(key=field, match=m.MatchAny(any=sorted(set(values))))])
        with _store_errors(action, collection=self.collection_name):
            self._live().delete(self.collection_name, points_selector=m.FilterSelector(filter=flt), wait=True)

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        self._delete_where("chunk_id", chunk_ids, "delete lexical vectors by chunk id")

    def delete_documents(self, document_ids: Sequence[str]) -> None:
        self._delete_where("document_id", document_ids, "delete lexical vectors by document")

    def delete_collection(self, collection: str) -> None:
        self._delete_where("collection", [collection], "delete lexical vectors by collection")

    def clear(self) -> None:
        """Remove every point (used by `kag reindex`)."""
        self._staged.clear()
        with _store_errors("clear the lexical index", collection=self.collection_name):
            client = self._live()
            if client.collection_exists(self.collection_name):
                client.delete_collection(self.collection_name)
            self._ensure_collection()

    # -- reads -----------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int,
        collections: Collection[str],
        document_ids: Collection[str] | None = None,
    ) -> list[ScoredChunk]:
        """Top-k by BM25 among chunks whose collection is in `collections`."""
        if k <= 0 or not collections or (document_ids is not None and not document_ids):
            return []  # no accessible collection (or document) means no result, never "all"
        indices, values = self.query_vector(query)
        if not indices:
            return []
        m = self._models
        must = [m.FieldCondition(key="collection", match=m.MatchAny(any=sorted(collections)))]
        if document_ids is not None:
            must.append(m.FieldCondition(key="document_id", match=m.MatchAny(any=sorted(document_ids))))
        with _store_errors("search the lexical index", collection=self.collection_name):
            response = self._live().query_points(
                self.collection_name,
                query=m.SparseVector(indices=indices, values=values),
                using=SPARSE_NAME,
                query_filter=m.Filter(must=must),
                limit=k,
                with_payload=True,
            )
        return [_scored(p.score, p.payload) for p in response.points if p.score > 0]

    def chunk_ids(self, collection: str | None = None) -> set[str]:
        """Every committed chunk id (optionally of one collection), for `kag doctor`."""
        m = self._models
        flt = None
        if collection is not None:
            flt = m.Filter(must=[m.FieldCondition(key="collection", match=m.MatchAny(any=[collection]))])
        with _store_errors("list lexical chunk ids", collection=self.collection_name):
            return scroll_chunk_ids(self._live(), self.collection_name, flt)

    def count(self) -> int:
        """Number of committed chunks."""
        with _store_errors("count lexical vectors", collection=self.collection_name):
            return int(self._live().count(self.collection_name, exact=True).count)


def _scored(score: float, payload: dict[str, Any] | None) -> ScoredChunk:
    payload = payload or {}
    return ScoredChunk(
        chunk_id=str(payload.get("chunk_id", "")),
        score=float(score),
        document_id=str(payload.get("document_id", "")),
        collection=str(payload.get("collection", "")),
    )
