"""Dense vector indexes: Qdrant Edge in-process (embedded default) and qdrant-client (server)."""

from __future__ import annotations

import shutil
import threading
import warnings
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kag.errors import DataDirLockedError, KagError, StoreError
from kag.ids import point_id
from kag.records import IndexedChunk, ScoredChunk
from kag.stores.base import VectorIndex

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

#: the one named dense vector of every point
VECTOR_NAME = "dense"
#: payload keys filtered on inside the engine; both get a keyword payload index
FILTER_FIELDS = ("collection", "document_id")

_UPSERT_BATCH = 1024
_SCROLL_PAGE = 1024


def scroll_chunk_ids(client: Any, collection_name: str, flt: Any) -> set[str]:
    """Every `chunk_id` payload in a qdrant-client collection (matching `flt`), page by page."""
    found: set[str] = set()
    offset = None
    while True:
        records, offset = client.scroll(
            collection_name,
            scroll_filter=flt,
            limit=_SCROLL_PAGE,
            offset=offset,
            with_payload=["chunk_id"],
            with_vectors=False,
        )
        found.update(str(r.payload["chunk_id"]) for r in records if r.payload)
        if offset is None:
            return found


_REINDEX_HINT = "run `kag reindex` to rebuild the vector index from the ledger"


def _translate(exc: Exception, action: str, **context: Any) -> StoreError:
    """The kag error for a third-party exception raised while doing `action`."""
    message = str(exc)
    if "WouldBlock" in message or "already accessed by another instance" in message:
        return DataDirLockedError(
            f"cannot {action}: the vector index is in use by another process",
            hint="stop the other kag process (server or ingest job), or point KAG_DATA_DIR elsewhere",
            **context,
        )
    return StoreError(f"cannot {action}: {message}", **context)


@contextmanager
def _store_errors(action: str, **context: Any) -> Iterator[None]:
    """Translate third-party exceptions raised inside the block into StoreError."""
    try:
        yield
    except KagError:
        raise
    except Exception as exc:  # qdrant_edge raises bare Exception; qdrant-client several types
        raise _translate(exc, action, **context) from exc


def _as_matrix(vectors: np.ndarray, rows: int, dim: int) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape != (rows, dim):
        raise StoreError(
            f"expected a ({rows}, {dim}) array of vectors, got shape {matrix.shape}",
            hint="pass one embedding row per chunk, produced by the configured embedder",
        )
    return matrix


def _as_query(vector: np.ndarray, dim: int) -> np.ndarray:
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if query.shape != (dim,):
        raise StoreError(f"expected a query vector of {dim} dimensions, got {query.shape[0]}")
    return query


def _payload(chunk: IndexedChunk) -> dict[str, str]:
    return {"collection": chunk.collection, "document_id": chunk.document_id, "chunk_id": chunk.chunk_id}


def _stored_vectors(records: Sequence[Any]) -> dict[str, np.ndarray]:
    """chunk id -> vector of retrieved points (named vector `VECTOR_NAME`), normalized."""
    found: dict[str, np.ndarray] = {}
    for record in records:
        vector = record.vector.get(VECTOR_NAME) if isinstance(record.vector, dict) else record.vector
        if record.payload and vector is not None:
            v = np.asarray(vector, dtype=np.float32)
            norm = float(np.linalg.norm(v))
            found[str(record.payload["chunk_id"])] = v / norm if norm > 0 else v
    return found


def _hit(score: float, payload: dict[str, Any] | None) -> ScoredChunk:
    payload = payload or {}
    return ScoredChunk(
        chunk_id=str(payload.get("chunk_id", "")),
        score=float(score),
        document_id=str(payload.get("document_id", "")),
        collection=str(payload.get("collection", "")),
    )


class EdgeVectorIndex:
    """Vectors in an embedded Qdrant Edge shard: HNSW, keyword payload indexes and a WAL, no server."""

    def __init__(
        self,
        path: Path,
        dim: int,
        *,
        hnsw_ef: int | None = None,
        indexing_threshold_kb: int | None = None,
        full_scan_threshold_kb: int | None = None,
        reset: bool = False,
    ) -> None:
        import qdrant_edge

        if dim <= 0:
            raise StoreError(f"vector size must be positive, got {dim}")
        self._q = qdrant_edge
        self.path = Path(path)
        self.dim = dim
        self._params = qdrant_edge.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None
        # None keeps Qdrant's defaults (HNSW above ~10 MB of vectors per segment and per filter)
        self._indexing_threshold_kb = indexing_threshold_kb
        self._full_scan_threshold_kb = full_scan_threshold_kb
        self._lock = threading.RLock()
        if reset:
            self._remove()
        self._shard: Any = self._open()

    # -- lifecycle -------------------------------------------------------------------------

    def _config(self) -> Any:
        q = self._q
        hnsw = optimizers = None
        if self._full_scan_threshold_kb is not None:
            hnsw = q.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=self._full_scan_threshold_kb)
        if self._indexing_threshold_kb is not None:
            optimizers = q.EdgeOptimizersConfig(indexing_threshold=self._indexing_threshold_kb)
        return q.EdgeConfig(
            vectors={VECTOR_NAME: q.EdgeVectorParams(size=self.dim, distance=q.Distance.Cosine)},
            hnsw_config=hnsw,
            optimizers=optimizers,
        )

    def _remove(self) -> None:
        """Delete the shard folder, unless another process has the shard open."""
        if (self.path / "edge_config.json").exists():
            try:
                # loading takes the WAL lock, so a shard in use elsewhere is never deleted
                with _store_errors("reset the vector index", path=str(self.path)):
                    self._q.EdgeShard.load(str(self.path)).close()
            except DataDirLockedError:
                raise
            except StoreError:
                pass  # unreadable shard: deleting it is what reset is for
        shutil.rmtree(self.path, ignore_errors=True)

    def _open(self) -> Any:
        q = self._q
        context = {"path": str(self.path)}
        if (self.path / "edge_config.json").exists():
            try:
                shard = q.EdgeShard.load(str(self.path), self._config())
            except Exception as exc:
                if "incompatible" in str(exc).lower():
                    raise StoreError(
                        f"the vector index at {self.path} was built for other vectors than the current "
                        f"{self.dim}-d embedder produces ({exc})",
                        hint=_REINDEX_HINT,
                        **context,
                    ) from exc
                raise _translate(exc, "open the vector index", **context) from exc
        else:
            with _store_errors("create the vector index", **context):
                shard = q.EdgeShard.create(str(self.path), self._config())
        with _store_errors("create payload indexes", **context):
            existing = set(shard.info().payload_schema)
            for field in FILTER_FIELDS:
                if field in existing:
                    continue
                # document filters are selective and served by the payload index alone, so skip
                # the extra per-value HNSW links that would only slow down optimize()
                params = q.KeywordIndexParams(enable_hnsw=False if field == "document_id" else None)
                shard.update(q.UpdateOperation.create_field_index(field, params))
        return shard

    def _live(self) -> Any:
        shard = self._shard
        if shard is None:
            raise StoreError("the vector index is closed", path=str(self.path))
        return shard

    def flush(self) -> None:
        """Make every write so far durable."""
        with self._lock, _store_errors("flush the vector index"):
            self._live().flush()

    def optimize(self) -> bool:
        """Build HNSW graphs and merge segments; blocking, call once after a large batch of writes."""
        with self._lock, _store_errors("optimize the vector index"):
            return bool(self._live().optimize())

    def stats(self) -> dict[str, int]:
        """Points, segments and HNSW-indexed vectors, for `kag doctor` and benchmarks."""
        with _store_errors("read vector index info"):
            info = self._live().info()
        return {
            "points": int(info.points_count),
            "segments": int(info.segments_count),
            "indexed_vectors": int(info.indexed_vectors_count),
        }

    def close(self) -> None:
        with self._lock:
            shard, self._shard = self._shard, None
            if shard is not None:
                with _store_errors("close the vector index"):
                    try:
                        shard.flush()
                    finally:
                        shard.close()  # releases the WAL lock even when the flush failed

    def clear(self) -> None:
        """Remove every point (used by `kag reindex`)."""
        with self._lock:
            self.close()
            self._remove()
            self._shard = self._open()

    def __enter__(self) -> EdgeVectorIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, chunks: Sequence[IndexedChunk], vectors: np.ndarray) -> None:
        """Insert or overwrite one point per chunk (point id = UUIDv5 of the chunk id)."""
        matrix = _as_matrix(vectors, len(chunks), self.dim)
        q = self._q
        with self._lock, _store_errors("upsert vectors"):
            shard = self._live()
            for start in range(0, len(chunks), _UPSERT_BATCH):
                points = [
                    q.Point(point_id(chunk.chunk_id), {VECTOR_NAME: matrix[start + i]}, _payload(chunk))
                    for i, chunk in enumerate(chunks[start : start + _UPSERT_BATCH])
                ]
                shard.update(q.UpdateOperation.upsert_points(points))

    def _delete_where(self, field: str, values: Sequence[str]) -> None:
        if not values:
            return
        q = self._q
        flt = q.Filter(must=[q.FieldCondition(key=field, match=q.MatchAny(any=list(values)))])
        with self._lock, _store_errors(f"delete vectors by {field}"):
            self._live().update(q.UpdateOperation.delete_points_by_filter(flt))

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        if not chunk_ids:
            return
        with self._lock, _store_errors("delete vectors by chunk id"):
            ids: list[Any] = [point_id(c) for c in chunk_ids]
            self._live().update(self._q.UpdateOperation.delete_points(ids))

    def delete_documents(self, document_ids: Sequence[str]) -> None:
        self._delete_where("document_id", document_ids)

    def delete_collection(self, collection: str) -> None:
        self._delete_where("collection", [collection])

    # -- reads -----------------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        k: int,
        collections: Collection[str],
        document_ids: Collection[str] | None = None,
    ) -> list[ScoredChunk]:
        """Top-k by cosine similarity among points whose collection is in `collections`."""
        if k <= 0 or not collections or (document_ids is not None and not document_ids):
            return []  # no accessible collection (or document) means no result, never "all"
        q = self._q
        must = [q.FieldCondition(key="collection", match=q.MatchAny(any=sorted(collections)))]
        if document_ids is not None:
            must.append(q.FieldCondition(key="document_id", match=q.MatchAny(any=sorted(document_ids))))
        request = q.QueryRequest(
            limit=k,
            query=q.Query.Nearest(_as_query(vector, self.dim), using=VECTOR_NAME),
            filter=q.Filter(must=must),
            with_payload=True,
            params=self._params,
        )
        with _store_errors("search the vector index"):
            points = self._live().query(request)
        return [_hit(p.score, p.payload) for p in points]

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (normalized) vectors of these chunks, by chunk id; ids not stored are left out."""
        if not chunk_ids:
            return {}
        ids: list[Any] = [point_id(c) for c in dict.fromkeys(chunk_ids)]
        with _store_errors("read stored vectors"):
            return _stored_vectors(self._live().retrieve(ids, ["chunk_id"], [VECTOR_NAME]))

    def chunk_ids(self, collection: str | None = None) -> set[str]:
        """Every chunk id stored (optionally of one collection), for `kag doctor`."""
        q = self._q
        flt = None
        if collection is not None:
            flt = q.Filter(must=[q.FieldCondition(key="collection", match=q.MatchAny(any=[collection]))])
        found: set[str] = set()
        offset = None
        with _store_errors("list vector chunk ids"):
            shard = self._live()
            while True:
                request = q.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, filter=flt, with_payload=["chunk_id"])
                records, offset = shard.scroll(request)
                found.update(str(r.payload["chunk_id"]) for r in records if r.payload)
                if offset is None:
                    return found

    def count(self) -> int:
        with _store_errors("count vectors"):
            return int(self._live().count(self._q.CountRequest(exact=True)))


class QdrantClientVectorIndex:
    """Vectors in one collection of a Qdrant server or cluster, through qdrant-client."""

    def __init__(
        self,
        client: QdrantClient,
        collection_name: str,
        dim: int,
        *,
        owns_client: bool = False,
        reset: bool = False,
    ) -> None:
        from qdrant_client import models

        if dim <= 0:
            raise StoreError(f"vector size must be positive, got {dim}")
        self._models = models
        self._client: QdrantClient | None = client
        self.collection_name = collection_name
        self.dim = dim
        self._owns_client = owns_client
        with _store_errors("open the Qdrant collection", collection=collection_name):
            if reset and client.collection_exists(collection_name):
                client.delete_collection(collection_name)
            self._ensure_collection()

    def _live(self) -> QdrantClient:
        if self._client is None:
            raise StoreError("the vector index is closed", collection=self.collection_name)
        return self._client

    def _ensure_collection(self) -> None:
        client = self._live()
        name = self.collection_name
        if not client.collection_exists(name):
            try:
                client.create_collection(
                    name,
                    vectors_config={
                        VECTOR_NAME: self._models.VectorParams(size=self.dim, distance=self._models.Distance.COSINE)
                    },
                )
            except Exception:
                if not client.collection_exists(name):  # another process may have won the race
                    raise
        with warnings.catch_warnings():
            # local mode (tests) warns that payload indexes are no-ops there; a server uses them
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field in FILTER_FIELDS:
                client.create_payload_index(name, field, self._models.PayloadSchemaType.KEYWORD, wait=True)
        vectors = client.get_collection(name).config.params.vectors
        params = vectors.get(VECTOR_NAME) if isinstance(vectors, dict) else None
        if params is None:
            raise StoreError(
                f"Qdrant collection {name!r} has no vector named {VECTOR_NAME!r}",
                hint="point KAG_QDRANT_COLLECTION at a collection created by kag, or run `kag reindex`",
                collection=name,
            )
        if params.size != self.dim:
            raise StoreError(
                f"Qdrant collection {name!r} holds {params.size}-d vectors, "
                f"but the embedder produces {self.dim}-d vectors",
                hint=_REINDEX_HINT,
                collection=name,
            )

    def _match(self, field: str, values: Collection[str]) -> Any:
        return self._models.FieldCondition(key=field, match=self._models.MatchAny(any=sorted(values)))

    def upsert(self, chunks: Sequence[IndexedChunk], vectors: np.ndarray) -> None:
        """Insert or overwrite one point per chunk (point id = UUIDv5 of the chunk id)."""
        matrix = _as_matrix(vectors, len(chunks), self.dim)
        with _store_errors("upsert vectors", collection=self.collection_name):
            client = self._live()
            for start in range(0, len(chunks), _UPSERT_BATCH):
                batch = chunks[start : start + _UPSERT_BATCH]
                points = [
                    self._models.PointStruct(
                        id=point_id(chunk.chunk_id),
                        vector={VECTOR_NAME: matrix[start + i].tolist()},
                        payload=_payload(chunk),
                    )
                    for i, chunk in enumerate(batch)
                ]
                client.upsert(self.collection_name, points=points, wait=True)

    def _delete(self, selector: Any, action: str) -> None:
        with _store_errors(action, collection=self.collection_name):
            self._live().delete(self.collection_name, points_selector=selector, wait=True)

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            ids: list[Any] = [point_id(c) for c in chunk_ids]
            self._delete(self._models.PointIdsList(points=ids), "delete vectors by chunk id")

    def delete_documents(self, document_ids: Sequence[str]) -> None:
        if document_ids:
            flt = self._models.Filter(must=[self._match("document_id", document_ids)])
            self._delete(self._models.FilterSelector(filter=flt), "delete vectors by document")

    def delete_collection(self, collection: str) -> None:
        flt = self._models.Filter(must=[self._match("collection", [collection])])
        self._delete(self._models.FilterSelector(filter=flt), "delete vectors by collection")

    def search(
        self,
        vector: np.ndarray,
        k: int,
        collections: Collection[str],
        document_ids: Collection[str] | None = None,
    ) -> list[ScoredChunk]:
        """Top-k by cosine similarity among points whose collection is in `collections`."""
        if k <= 0 or not collections or (document_ids is not None and not document_ids):
            return []  # no accessible collection (or document) means no result, never "all"
        must = [self._match("collection", collections)]
        if document_ids is not None:
            must.append(self._match("document_id", document_ids))
        with _store_errors("search the vector index", collection=self.collection_name):
            response = self._live().query_points(
                self.collection_name,
                query=_as_query(vector, self.dim).tolist(),
                using=VECTOR_NAME,
                query_filter=self._models.Filter(must=must),
                limit=k,
                with_payload=True,
            )
        return [_hit(p.score, p.payload) for p in response.points]

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (normalized) vectors of these chunks, by chunk id; ids not stored are left out."""
        if not chunk_ids:
            return {}
        ids: list[Any] = [point_id(c) for c in dict.fromkeys(chunk_ids)]
        with _store_errors("read stored vectors", collection=self.collection_name):
            records = self._live().retrieve(
                self.collection_name, ids, with_payload=["chunk_id"], with_vectors=[VECTOR_NAME]
            )
        return _stored_vectors(records)

    def chunk_ids(self, collection: str | None = None) -> set[str]:
        """Every chunk id stored (optionally of one collection), for `kag doctor`."""
        flt = self._models.Filter(must=[self._match("collection", [collection])]) if collection is not None else None
        with _store_errors("list vector chunk ids", collection=self.collection_name):
            return scroll_chunk_ids(self._live(), self.collection_name, flt)

    def count(self) -> int:
        with _store_errors("count vectors", collection=self.collection_name):
            return int(self._live().count(self.collection_name, exact=True).count)

    def clear(self) -> None:
        """Remove every point (used by `kag reindex`)."""
        with _store_errors("clear the vector index", collection=self.collection_name):
            client = self._live()
            if client.collection_exists(self.collection_name):
                client.delete_collection(self.collection_name)
            self._ensure_collection()

    def flush(self) -> None:
        """Writes are acknowledged after the server's WAL (`wait=True`), so there is nothing to do."""

    def optimize(self) -> bool:
        """The server runs its own optimizers in the background, so there is nothing to do."""
        return False

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            with _store_errors("close the Qdrant client", collection=self.collection_name):
                client.close()

    def __enter__(self) -> QdrantClientVectorIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_vector_index(
    *,
    data_dir: Path,
    dim: int,
    qdrant_url: str | None,
    qdrant_api_key: str | None,
    collection_name: str,
    reset: bool = False,
) -> VectorIndex:
    """Qdrant Edge in `data_dir/qdrant` when no server URL is set, else the server's collection."""
    if qdrant_url is None:
        return EdgeVectorIndex(Path(data_dir) / "qdrant", dim, reset=reset)
    from qdrant_client import QdrantClient

    with _store_errors("connect to Qdrant", url=qdrant_url):
        client = QdrantClient(url=qdrant_url, api_key=qdrant_api_key)
    try:
        return QdrantClientVectorIndex(client, collection_name, dim, owns_client=True, reset=reset)
    except StoreError as exc:
        client.close()
        exc.hint = exc.hint or "check KAG_QDRANT_URL and that the Qdrant server is running"
        raise
