"""Batch ingestion: files -> loader -> chunks -> graph -> embeddings -> ledger -> indexes."""

from __future__ import annotations

import glob
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ingest.loaders.base import check_text_length
from kag import ids
from kag.errors import DocumentError, FileTooLargeError, KagError, UnreadablePathError
from kag.ledger.models import DocumentStatus, JobStatus
from kag.models.embedder import Embedder
from kag.records import ChunkDraft, GraphExtraction, ParsedDocument
from kag.stores.bundle import Stores
from kag.stores.graph import embed_entity_names
from kag.units import MB, describe_limit, describe_size

if TYPE_CHECKING:
    from ingest.executors import Executor

log = logging.getLogger("kag.ingest")

GLOB_CHARS = set("*?[")


class ChunkerLike(Protocol):
    def chunk(self, doc: ParsedDocument) -> list[ChunkDraft]: ...


class ExtractorLike(Protocol):
    def extract(self, chunks: Sequence[ChunkDraft]) -> GraphExtraction: ...


class LoaderRegistryLike(Protocol):
    def for_path(self, path: str | Path): ...


@dataclass(frozen=True, slots=True)
class FileError:
    """One file that could not be ingested, and why."""

    path: str
    code: str
    message: str


@dataclass
class JobReport:
    """What an ingestion job did; `--json` prints exactly this."""

    job_id: str
    collection: str
    status: str = JobStatus.RUNNING
    files_total: int = 0
    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_failed: int = 0
    documents_deleted: int = 0
    chunks_added: int = 0
    seconds: float = 0.0
    errors: list[FileError] = field(default_factory=list)

    @property
    def files_done(self) -> int:
        return self.documents_added + self.documents_updated + self.documents_unchanged + self.documents_failed

    def counts(self) -> dict[str, int]:
        return {
            "files_total": self.files_total,
            "files_done": self.files_done,
            "documents_added": self.documents_added,
            "documents_updated": self.documents_updated,
            "documents_unchanged": self.documents_unchanged,
            "documents_failed": self.documents_failed,
            "documents_deleted": self.documents_deleted,
            "chunks_added": self.chunks_added,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "collection": self.collection,
            "status": self.status,
            **self.counts(),
            "seconds": round(self.seconds, 3),
            "errors": [{"path": e.path, "code": e.code, "message": e.message} for e in self.errors],
        }


class ProgressListener(Protocol):
    def on_start(self, files_total: int) -> None: ...

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A parsed, chunked and graph-extracted document waiting to be embedded and written."""

    path: str
    source_uri: str
    sha256: str
    size: int
    parsed: ParsedDocument
    chunks: list[ChunkDraft]
    graph: GraphExtraction
    is_update: bool
    #: chunk embeddings when the executor computed them (Ray); else the writer embeds
    vectors: np.ndarray | None = None


#: what preparing one file yields: a document to write, a per-file error, or the source uri of an
#: unchanged file
Item = _Prepared | FileError | str


@dataclass(frozen=True, slots=True)
class KnownDocument:
    """What the ledger knows of a file's current version: enough to skip it when unchanged."""

    sha256: str
    status: str
    fingerprint: str | None

    @classmethod
    def of(cls, row: Any) -> KnownDocument | None:
        if row is None:
            return None
        return cls(row.sha256, row.status, (row.meta or {}).get("_kag_fingerprint"))


class Preparer:
    """Reads, parses, chunks and graph-extracts one file; needs no store, so it runs on any worker."""

    def __init__(
        self,
        chunker: ChunkerLike,
        registry: LoaderRegistryLike,
        *,
        extractor: ExtractorLike | None = None,
        max_file_bytes: int = 50 * MB,
        max_document_chars: int | None = None,
        fingerprint: str = "",
    ) -> None:
        self.chunker = chunker
        self.registry = registry
        self.extractor = extractor
        self.max_file_bytes = max_file_bytes
        self.max_document_chars = max_document_chars
        self.fingerprint = fingerprint

    def prepare(self, path: Path, collection: str, known: KnownDocument | None) -> Item:
        """A prepared document, a FileError, or the source uri when the file is unchanged since `known`."""
        shown = str(path)
        source_uri = str(path.resolve())
        try:
            try:
                size = path.stat().st_size
                if size > self.max_file_bytes:
                    raise FileTooLargeError(
                        f"{shown} is {describe_size(size)}, over the {describe_limit(self.max_file_bytes)} limit",
                        hint="raise KAG_MAX_FILE_SIZE_MB (in MB of 10^6 bytes) to ingest it",
                    )
                data = path.read_bytes()
            except OSError as exc:
                raise UnreadablePathError(f"cannot read {shown}: {exc.strerror or exc}") from exc
            sha = ids.sha256_bytes(data)
            if (
                known is not None
                and known.sha256 == sha
                and known.status == DocumentStatus.INDEXED
                and known.fingerprint == self.fingerprint
            ):
                return source_uri
            loader = self.registry.for_path(path)
            parsed = loader.load(data, source=shown)
            # every loader, a plugin's too, is held to the text limit (the built-ins stop early)
            check_text_length(parsed.text, shown, self.max_document_chars)
            chunks = self.chunker.chunk(parsed)
            graph = self.extractor.extract(chunks) if self.extractor is not None and chunks else GraphExtraction()
            return _Prepared(shown, source_uri, sha, len(data), parsed, chunks, graph, known is not None)
        except DocumentError as exc:
            return FileError(shown, exc.code, str(exc))
        except KagError:
            raise
        except Exception as exc:
            log.exception("unexpected error while preparing a file", extra={"path": shown})
            return FileError(shown, "internal_error", f"{exc.__class__.__name__}: {exc}")


def embedding_text(title: str, text: str, embed_title: bool) -> str:
    """What is embedded for a chunk: its text, after the document title when `embed_title` is set
    (a later chunk of a long document otherwise loses the context its title gives)."""
    if not embed_title or not title or text.startswith(title):
        return text
    return f"{title}\n{text}"


def _title_of(p: _Prepared) -> str:
    """A document's title as the ledger stores it."""
    return p.parsed.title or Path(p.path).name


def discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[FileError]]:
    """Expand files, folders (recursively, skipping hidden entries) and globs into a sorted file list."""
    found: dict[str, Path] = {}
    errors: list[FileError] = []
    for raw in paths:
        text = str(raw)
        candidates: list[Path]
        if any(ch in GLOB_CHARS for ch in text) and not Path(text).exists():
            candidates = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            if not candidates:
                errors.append(FileError(text, UnreadablePathError.code, f"no file matches the pattern {text}"))
                continue
        else:
            candidates = [Path(text)]
        for path in candidates:
            if path.is_dir():
                for child in sorted(path.rglob("*")):
                    rel = child.relative_to(path).parts
                    if child.is_file() and not any(part.startswith(".") for part in rel):
                        found.setdefault(str(child.resolve()), child)
            elif path.is_file():
                found.setdefault(str(path.resolve()), path)
            elif path.exists():
                errors.append(FileError(text, UnreadablePathError.code, f"{text} is not a regular file"))
            else:
                errors.append(FileError(text, UnreadablePathError.code, f"{text} does not exist"))
    return [found[k] for k in sorted(found)], errors


class Ingestor:
    """Runs ingestion jobs against one set of stores; idempotent and crash-safe."""

    def __init__(
        self,
        stores: Stores,
        embedder: Embedder,
        chunker: ChunkerLike,
        registry: LoaderRegistryLike,
        *,
        extractor: ExtractorLike | None = None,
        max_file_bytes: int = 50 * MB,
        max_document_chars: int | None = None,
        batch_chunks: int = 256,
        fingerprint: str = "",
        executor: Executor | None = None,
        embed_title: bool = False,
        name_embedder: Embedder | None = None,
    ) -> None:
        from ingest.executors import InProcessExecutor

        self.stores = stores
        self.embedder = embedder
        #: embeds entity names for query-time linking (default: the chunk embedder)
        self.name_embedder: Embedder = name_embedder or embedder
        # documents ingested under other chunking/embedding settings are re-processed
        self.preparer = Preparer(
            chunker,
            registry,
            extractor=extractor,
            max_file_bytes=max_file_bytes,
            max_document_chars=max_document_chars,
            fingerprint=fingerprint,
        )
        self.batch_chunks = batch_chunks
        #: where parsing, chunking, extraction and embedding run; writes always happen here
        self.executor: Executor = executor or InProcessExecutor()
        self.embed_title = embed_title

    @property
    def fingerprint(self) -> str:
        return self.preparer.fingerprint

    def embedding_text(self, title: str, text: str) -> str:
        """What is embedded for a chunk (see `embedding_text`)."""
        return embedding_text(title, text, self.embed_title)

    # --- public ------------------------------------------------------------------------
    def ingest(
        self,
        paths: Sequence[str | Path],
        collection: str,
        *,
        sync: bool = False,
        listener: ProgressListener | None = None,
        job_id: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        executor: Executor | None = None,
    ) -> JobReport:
        """Ingest files into a collection; per-file errors are recorded, never raised.

        `executor` overrides the ingestor's own for this job (e.g. an API job asking for Ray)."""
        started = time.perf_counter()
        ledger = self.stores.ledger
        runner = executor or self.executor
        self.repair()
        ledger.ensure_collection(collection)
        report = JobReport(job_id=job_id or uuid.uuid4().hex, collection=collection)
        ledger.create_job(
            report.job_id, collection, {"paths": [str(p) for p in paths], "sync": sync}, executor=runner.name
        )
        try:
            files, discover_errors = discover(paths)
            report.files_total = len(files) + len(discover_errors)
            if listener:
                listener.on_start(report.files_total)
            for err in discover_errors:
                self._fail(report, err, listener)
            self._run(runner, files, collection, report, listener, should_stop)
            if sync:
                report.documents_deleted = self._sync(paths, files, collection)
            # the names of entities this job (or an interrupted earlier one) added, embedded once, in
            # large batches, so query-time linking reads vectors instead of running the model
            named = embed_entity_names(ledger, self.name_embedder, collection)
            if named:
                log.info("entity names embedded", extra={"collection": collection, "entities": named})
            if report.chunks_added:
                # one HNSW build per job, not per batch: search is exact (brute force) until then
                self.stores.vectors.optimize()
            # a stop that came after the last file changes nothing: the job did all its work
            interrupted = should_stop is not None and should_stop() and report.files_done < report.files_total
            if interrupted:
                report.status = JobStatus.INTERRUPTED
            elif report.files_total and report.documents_failed == report.files_total:
                report.status = JobStatus.FAILED
            else:
                report.status = JobStatus.COMPLETED
            ledger.update_job(report.job_id, **report.counts())
            ledger.finish_job(report.job_id, report.status)
        except BaseException as exc:
            report.status = JobStatus.FAILED
            try:
                ledger.update_job(report.job_id, **report.counts())
                ledger.finish_job(report.job_id, JobStatus.FAILED, error=f"{exc.__class__.__name__}: {exc}")
            except Exception:
                log.exception("could not record the job failure", extra={"job_id": report.job_id})
            raise
        finally:
            report.seconds = time.perf_counter() - started
        return report

    def delete_document(self, document_id: str) -> None:
        """Remove a document from every store: indexes first, then the ledger row."""
        ledger = self.stores.ledger
        ledger.get_document(document_id)  # raises NotFoundError
        ledger.mark_deleting(document_id)
        self._purge_indexes([document_id])
        ledger.delete_document(document_id)

    def delete_collection(self, collection: str) -> None:
        """Remove a collection and every trace of it from every store."""
        self.stores.vectors.delete_collection(collection)
        self.stores.fulltext.delete_collection(collection)
        self.stores.fulltext.commit()
        self.stores.vectors.flush()
        self.stores.ledger.delete_collection(collection)

    def repair(self) -> dict[str, int]:
        """Finish what a crashed run left: `indexing` documents re-derive their index entries from
        the ledger, `deleting` documents finish deleting, `running` jobs become `interrupted`."""
        ledger = self.stores.ledger
        fixed = {"reindexed": 0, "deleted": 0, "jobs_interrupted": ledger.interrupt_running_jobs()}
        for row in ledger.documents(status=DocumentStatus.DELETING):
            self._purge_indexes([row.id])
            ledger.delete_document(row.id)
            fixed["deleted"] += 1
        stuck = ledger.documents(status=DocumentStatus.INDEXING)
        for row in stuck:
            self.reindex_document(row.id)
            fixed["reindexed"] += 1
        return fixed

    def reindex_document(self, document_id: str) -> int:
        """Rebuild one document's index entries from its ledger rows."""
        chunks = self.stores.ledger.indexed_chunks_of(document_id)
        self._purge_indexes([document_id])
        if chunks:
            vectors = self.embedder.embed([self.embedding_text(c.title, c.text) for c in chunks])
            self.stores.vectors.upsert(chunks, vectors)
            self.stores.fulltext.add(chunks)
        self.stores.fulltext.commit()
        self.stores.vectors.flush()
        self.stores.ledger.mark_indexed([document_id])
        return len(chunks)

    # --- internals -----------------------------------------------------------------------
    def _purge_indexes(self, document_ids: list[str]) -> None:
        self.stores.vectors.delete_documents(document_ids)
        self.stores.fulltext.delete_documents(document_ids)
        self.stores.fulltext.commit()
        self.stores.vectors.flush()

    def _fail(self, report: JobReport, err: FileError, listener: ProgressListener | None) -> None:
        report.documents_failed += 1
        report.errors.append(err)
        self.stores.ledger.add_job_error(report.job_id, err.path, err.code, err.message)
        log.warning("file failed", extra={"path": err.path, "code": err.code, "error": err.message})
        if listener:
            listener.on_file_done(err.path, 0, False)

    def _run(
        self,
        runner: Executor,
        files: list[Path],
        collection: str,
        report: JobReport,
        listener: ProgressListener | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        # the executor prepares (and maybe embeds) batches in file order; this thread writes them
        batches = runner.batches(self, files, collection, should_stop)
        try:
            for batch in batches:
                self._write_batch(batch, report, listener)
                self.stores.ledger.update_job(report.job_id, **report.counts())
        finally:
            close = getattr(batches, "close", None)  # a generator stops its workers on close
            if close is not None:
                close()

    def _prepare(self, path: Path, collection: str) -> Item:
        """Read, parse, chunk and extract one file; returns the source uri when it is unchanged."""
        row = self.stores.ledger.find_document(collection, str(path.resolve()))
        return self.preparer.prepare(path, collection, KnownDocument.of(row))

    def _write_batch(self, batch: Sequence[Item], report: JobReport, listener: ProgressListener | None) -> None:
        ledger = self.stores.ledger
        prepared = [item for item in batch if isinstance(item, _Prepared)]
        for item in batch:
            if isinstance(item, FileError):
                self._fail(report, item, listener)
            elif isinstance(item, str):
                report.documents_unchanged += 1
                if listener:
                    listener.on_file_done(item, 0, True)
        if not prepared:
            return
        # embed first: a crash while embedding leaves the stores untouched
        if all(p.vectors is not None for p in prepared):
            vectors = np.concatenate([p.vectors for p in prepared if p.vectors is not None])
        else:
            texts = [self.embedding_text(_title_of(p), c.text) for p in prepared for c in p.chunks]
            vectors = self.embedder.embed(texts)
        writes = []
        for p in prepared:
            meta = dict(p.parsed.metadata)
            meta["_kag_fingerprint"] = self.fingerprint
            if p.parsed.pages:
                meta["pages"] = len(p.parsed.pages)
            writes.append(
                ledger.write_document(
                    collection=report.collection,
                    source_uri=p.source_uri,
                    sha256=p.sha256,
                    mime_type=p.parsed.mime_type,
                    title=_title_of(p),
                    text=p.parsed.text,
                    size_bytes=p.size,
                    metadata=meta,
                    chunks=p.chunks,
                    graph=p.graph,
                )
            )
        updated = [w.document_id for w, p in zip(writes, prepared, strict=True) if p.is_update]
        if updated:
            self.stores.vectors.delete_documents(updated)
            self.stores.fulltext.delete_documents(updated)
        all_chunks = [c for w in writes for c in w.chunks]
        self.stores.vectors.upsert(all_chunks, vectors)
        self.stores.fulltext.add(all_chunks)
        self.stores.fulltext.commit()
        self.stores.vectors.flush()
        ledger.mark_indexed([w.document_id for w in writes])
        for w, p in zip(writes, prepared, strict=True):
            if p.is_update:
                report.documents_updated += 1
            else:
                report.documents_added += 1
            report.chunks_added += len(w.chunks)
            # a part that failed alone (an email's broken attachment): reported, the document kept
            for part in p.parsed.metadata.get("attachment_errors", ()):
                err = FileError(f"{p.path}#{part['attachment']}", part["code"], part["message"])
                report.errors.append(err)
                ledger.add_job_error(report.job_id, err.path, err.code, err.message)
            if listener:
                listener.on_file_done(p.path, len(w.chunks), True)

    def _sync(self, roots: Sequence[str | Path], present: list[Path], collection: str) -> int:
        """Delete documents whose source file under the given roots no longer exists."""
        folders = [str(Path(r).resolve()) for r in roots if Path(r).is_dir()]
        seen = {str(p.resolve()) for p in present}
        removed = 0
        for row in self.stores.ledger.documents(collection=collection):
            under = any(row.source_uri == f or row.source_uri.startswith(f.rstrip("/") + "/") for f in folders)
            if under and row.source_uri not in seen and not Path(row.source_uri).exists():
                self.delete_document(row.id)
                removed += 1
        return removed
