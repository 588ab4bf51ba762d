"""Open the ledger and the derived indexes together, under the embedded data dir's lock."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from kag.errors import DataDirLockedError
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
    lock_timeout: float = 0,
) -> Stores:
    """Open every store; the embedded data dir is locked for this process until `close()`."""
    from kag.stores.fulltext import TantivyIndex
    from kag.stores.vector import open_vector_index

    lock = DataDirLock(data_dir)
    lock.acquire(timeout=lock_timeout)
    try:
        ledger = Ledger(database_url)
        vectors = open_vector_index(
            data_dir=data_dir,
            dim=dim,
            qdrant_url=qdrant_url,
            qdrant_api_key=qdrant_api_key,
            collection_name=qdrant_collection,
        )
        fulltext = TantivyIndex(data_dir / "tantivy")
    except BaseException:
        lock.release()
        raise
    return Stores(ledger=ledger, vectors=vectors, fulltext=fulltext, lock=lock)
