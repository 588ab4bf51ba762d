"""Protocols of the derived indexes; every backend passes the same contract tests."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from kag.records import IndexedChunk, ScoredChunk


@runtime_checkable
class VectorIndex(Protocol):
    """Dense vectors of chunks, searchable under a set of collections inside the engine."""

    def upsert(self, chunks: Sequence[IndexedChunk], vectors: np.ndarray) -> None:
        """Insert or overwrite one point per chunk (point id = UUIDv5 of the chunk id)."""

    def search(
        self,
        vector: np.ndarray,
        k: int,
        collections: Collection[str],
        document_ids: Collection[str] | None = None,
    ) -> list[ScoredChunk]:
        """Top-k by cosine similarity among points whose collection is in `collections`."""

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (normalized) vectors of these chunks, by chunk id; ids not stored are left out."""

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None: ...

    def delete_documents(self, document_ids: Sequence[str]) -> None: ...

    def delete_collection(self, collection: str) -> None: ...

    def chunk_ids(self, collection: str | None = None) -> set[str]:
        """Every chunk id stored (optionally of one collection), for `kag doctor`."""

    def count(self) -> int: ...

    def clear(self) -> None:
        """Remove every point (used by `kag reindex`)."""

    def flush(self) -> None:
        """Make every write so far durable."""

    def optimize(self) -> bool:
        """Build search structures (HNSW) after a bulk load; True if anything was done."""

    def close(self) -> None: ...


@runtime_checkable
class FullTextIndex(Protocol):
    """BM25 over chunk title + text, filtered by collection inside the engine."""

    def add(self, chunks: Sequence[IndexedChunk]) -> None:
        """Index chunks; an already indexed chunk id is replaced, never duplicated."""

    def commit(self) -> None: ...

    def search(
        self,
        query: str,
        k: int,
        collections: Collection[str],
        document_ids: Collection[str] | None = None,
    ) -> list[ScoredChunk]: ...

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None: ...

    def delete_documents(self, document_ids: Sequence[str]) -> None: ...

    def delete_collection(self, collection: str) -> None: ...

    def chunk_ids(self, collection: str | None = None) -> set[str]: ...

    def count(self) -> int: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...
