"""Open the ledger and the derived indexes together, under the embedded data dir's lock."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from kag.errors import ConfigurationError, DataDirLockedError, KagError
from kag.ledger import Ledger
from kag.stores.base import FullTextIndex, VectorIndex


class DataDirLock:
    """An exclusive, process-wide lock on the data dir: one kag process writes it at a time."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "kag.lock"
        self._lock = FileLock(str(self.path))

    def acquire(self, timeout: float = 0) -> None:
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout as exc:
            holder = _read_pid(self.path.with_suffix(".pid"))
            raise DataDirLockedError(
                f"the data dir {self.path.parent} is in use by another kag process"
                + (f" (pid {holder})" if holder else ""),
                hint="wait for it to finish, or point KAG_DATA_DIR elsewhere",
            ) from exc
        self.path.with_suffix(".pid").write_text(str(os.getpid()))

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def _read_pid(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass
class Stores:
    """The ledger (truth) and the indexes derived from it."""

    ledger: Ledger
    vectors: VectorIndex
    fulltext: FullTextIndex
    lock: DataDirLock | None = None

    def close(self) -> None:
        for closer in (self.fulltext.close, self.vectors.close, self.ledger.close):
            try:
                closer()
            except Exception:  # closing must release the lock whatever happens
                pass
        if self.lock is not None:
            self.lock.release()


def open_stores(
    *,
    data_dir: Path,
    database_url: str,
    dim: int,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    qdrant_collection: str = "kag_chunks",
    lexical_backend: str = "tantivy",
    qdrant_lexical_collection: str = "kag_lexical",
    lexical_avg_doc_tokens: float = 100.0,
    lexical_title_boost: float = 0.5,
    lock_timeout: float = 0,
    grade_floors: Mapping[str, str] | None = None,
) -> Stores:
    """Open every store; the embedded data dir is locked for this process until `close()`."""
    from kag.stores.vector import open_vector_index

    lock = DataDirLock(data_dir)
    lock.acquire(timeout=lock_timeout)
    try:
        ledger = Ledger(database_url, grade_floors=grade_floors)
        vectors = open_vector_index(
            data_dir=data_dir,
            dim=dim,
            qdrant_url=qdrant_url,
            qdrant_api_key=qdrant_api_key,
            collection_name=qdrant_collection,
        )
        try:
            fulltext = open_fulltext_index(
                backend=lexical_backend,
                data_dir=data_dir,
                qdrant_url=qdrant_url,
                qdrant_api_key=qdrant_api_key,
                collection_name=qdrant_lexical_collection,
                avg_doc_tokens=lexical_avg_doc_tokens,
                title_boost=lexical_title_boost,
            )
        except BaseException:
            vectors.close()
            raise
    except BaseException:
        lock.release()
        raise
    return Stores(ledger=ledger, vectors=vectors, fulltext=fulltext, lock=lock)


def open_fulltext_index(
    *,
    backend: str,
    data_dir: Path,
    qdrant_url: str | None,
    qdrant_api_key: str | None,
    collection_name: str = "kag_lexical",
    avg_doc_tokens: float = 100.0,
    title_boost: float = 0.5,
    reset: bool = False,
) -> FullTextIndex:
    """Tantivy in `data_dir/tantivy`, or BM25 sparse vectors in the Qdrant server at `qdrant_url`."""
    if backend == "tantivy":
        from kag.stores.fulltext import TantivyIndex

        return TantivyIndex(Path(data_dir) / "tantivy", title_boost=title_boost, reset=reset)
    if backend != "qdrant":
        raise ConfigurationError(
            f"unknown lexical backend {backend!r}", hint="set KAG_LEXICAL_BACKEND to `tantivy` or `qdrant`"
        )
    if not qdrant_url:
        raise ConfigurationError(
            "the qdrant lexical backend needs a Qdrant server",
            hint="set KAG_QDRANT_URL, or KAG_LEXICAL_BACKEND=tantivy for the embedded index",
        )
    from qdrant_client import QdrantClient

    from kag.stores.fulltext_qdrant import QdrantBM25Index
    from kag.stores.vector import _store_errors

    with _store_errors("connect to Qdrant", url=qdrant_url):
        client = QdrantClient(url=qdrant_url, api_key=qdrant_api_key)
    try:
        return QdrantBM25Index(
            client,
            collection_name,
            avg_text_tokens=avg_doc_tokens,
            title_boost=title_boost,
            owns_client=True,
            reset=reset,
        )
    except KagError as exc:
        client.close()
        exc.hint = exc.hint or "check KAG_QDRANT_URL and that the Qdrant server is running"
        raise
