"""The records and one-method protocols that ingestion's modules share.

Every other module of `ingest/` imports from here and none of them from each other in a circle:
`pipeline` (the job driver) imports the stages and the executors, the executors import this module
and `spec`, and nothing here imports any of them (a test walks the import graph to keep it so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kag.records import ChunkDraft, GraphExtraction, ParsedDocument

#: the stages a file goes through, as the progress bar and the job view name them
PARSING, EMBEDDING, INDEXING, GRAPH = "parsing", "embedding", "indexing", "graph"
STAGES = (PARSING, EMBEDDING, INDEXING, GRAPH)


class ChunkerLike(Protocol):
    def chunk(self, doc: ParsedDocument) -> list[ChunkDraft]: ...


class ExtractorLike(Protocol):
    def extract(self, chunks: Sequence[ChunkDraft]) -> GraphExtraction: ...


class LoaderRegistryLike(Protocol):
    def for_path(self, path: str | Path) -> Any: ...


@dataclass(frozen=True, slots=True)
class FileError:
    """One file that could not be ingested, and why."""

    path: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class KnownDocument:
    """What the ledger knows of a file's current version: enough to skip it when unchanged, and to
    tell whether the job that wrote it is the one running now (a resumed job counts it as its own)."""

    sha256: str
    status: str
    fingerprint: str | None
    job_id: str | None = None
    version: int = 1

    @classmethod
    def of(cls, row: Any) -> KnownDocument | None:
        if row is None:
            return None
        return cls(row.sha256, row.status, (row.meta or {}).get("_kag_fingerprint"), row.job_id, row.version)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed and chunked document waiting to be embedded and written (stage 1)."""

    path: str
    source_uri: str
    sha256: str
    size: int
    parsed: ParsedDocument
    chunks: list[ChunkDraft]
    is_update: bool
    #: chunk embeddings when the executor computed them (Ray); else the index stage embeds
    vectors: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Unchanged:
    """A file whose current version the ledger already holds, indexed under the same settings."""

    path: str
    source_uri: str
    known: KnownDocument


#: what preparing one file yields: a document to write, a per-file error, or an unchanged file
Item = Prepared | FileError | Unchanged


@dataclass(frozen=True, slots=True)
class StageProgress:
    """A file finished a stage (`path` set), or a stage began (`path` None, `total` what it will see)."""

    stage: str
    path: str | None = None
    total: int | None = None


class ProgressListener(Protocol):
    def on_start(self, files_total: int) -> None: ...

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None: ...


@runtime_checkable
class StageListener(Protocol):
    """A listener that also wants per-stage progress (the CLI bar); plain listeners are not asked."""

    def on_stage(self, progress: StageProgress) -> None: ...


class FilePreparer(Protocol):
    """Stage 1's first half: read, parse and chunk one file (no store needed: runs on any worker)."""

    def prepare(self, path: Path, collection: str, known: KnownDocument | None) -> Item: ...


class JobSource(Protocol):
    """What an executor needs of the job it runs: the files' ledger state and a way to prepare one."""

    def known_documents(self, collection: str, paths: Sequence[Path]) -> dict[str, KnownDocument]:
        """resolved path -> what the ledger knows of it, for the files it knows."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Prepares a job's files in file order; the caller batches, embeds (unless done) and writes them."""

    #: recorded in the ledger's job row (`kag jobs`)
    name: str

    def items(
        self,
        source: JobSource,
        preparer: FilePreparer,
        files: Sequence[Path],
        collection: str,
        batch_chunks: int,
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[Item]:
        """One item per file, in file order, stopping early once `should_stop()` is true; about
        `batch_chunks` chunks of look-ahead."""
        ...

    def close(self) -> None:
        """Release what the executor holds (worker pools, a Ray session it started)."""
        ...


def embedding_text(title: str, text: str, embed_title: bool) -> str:
    """What is embedded for a chunk: its text, after the document title when `embed_title` is set
    (a later chunk of a long document otherwise loses the context its title gives)."""
    if not embed_title or not title or text.startswith(title):
        return text
    return f"{title}\n{text}"


def title_of(p: Prepared) -> str:
    """A document's title as the ledger stores it."""
    return p.parsed.title or Path(p.path).name
