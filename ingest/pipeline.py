"""Batch ingestion jobs: files -> stage 1 (parse, chunk, embed, index: searchable) -> stage 2 (graph)."""

from __future__ import annotations

import errno
import glob
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.executors import InProcessExecutor
from ingest.protocols import (
    PARSING,
    ChunkerLike,
    Executor,
    ExtractorLike,
    FileError,
    KnownDocument,
    LoaderRegistryLike,
    Prepared,
    ProgressListener,
    StageListener,
    StageProgress,
    Unchanged,
    embedding_text,
    title_of,
)
from ingest.stages.embed import IndexStage
from ingest.stages.graph import GraphReport, GraphStage
from ingest.stages.prepare import Preparer
from kag import ids
from kag.errors import ConfigurationError, UnreadablePathError, UnsupportedFormatError
from kag.ledger.models import DocumentStatus, JobStatus
from kag.ledger.store import DEFAULT_STALE_SECONDS
from kag.models.embedder import Embedder
from kag.stores.bundle import Stores
from kag.units import MB

# the records and the preparer lived here before the stages had their own modules
__all__ = [
    "ChunkerLike",
    "ExtractorLike",
    "FileError",
    "Ingestor",
    "JobReport",
    "KnownDocument",
    "LoaderRegistryLike",
    "Preparer",
    "ProgressListener",
    "discover",
    "embedding_text",
]
_Prepared = Prepared
_title_of = title_of

log = logging.getLogger("kag.ingest")

GLOB_CHARS = set("*?[")
#: when stage 2 runs for a job: in the same run after stage 1, later (`kag graph build`), or never
GRAPH_MODES = ("now", "later")


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
    #: stage 2 of this run (None when it did not run: `--graph later`, or the graph is off)
    graph: GraphReport | None = None

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
            "graph": self.graph.to_dict() if self.graph is not None else None,
        }


class _Progress:
    """Forwards to a listener: files always, stages only to a listener that asks for them."""

    def __init__(self, listener: ProgressListener | None) -> None:
        self.listener = listener
        self.stages = listener if isinstance(listener, StageListener) else None

    def start(self, files_total: int) -> None:
        if self.listener is not None:
            self.listener.on_start(files_total)

    def file_done(self, path: str, chunks: int, ok: bool) -> None:
        if self.listener is not None:
            self.listener.on_file_done(path, chunks, ok)

    def stage(self, progress: StageProgress) -> None:
        if self.stages is not None:
            self.stages.on_stage(progress)


@dataclass
class Discovery:
    """What a set of paths expands to: the files (sorted), their root-relative names, and the entries
    that are not ingestible files, each as a per-file error."""

    files: list[Path] = field(default_factory=list)
    #: resolved path -> the path relative to the folder argument it was found under (a file argument:
    #: its name), which readers are shown instead of the server's absolute path
    names: dict[str, str] = field(default_factory=dict)
    errors: list[FileError] = field(default_factory=list)


def discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[FileError]]:
    """Expand files, folders (recursively, skipping hidden entries) and globs into a sorted file list."""
    found = discover_sources(paths)
    return found.files, found.errors


def discover_sources(paths: Sequence[str | Path], is_document: Callable[[str], bool] | None = None) -> Discovery:
    """Like `discover`, with root-relative names; `is_document(name)` says whether a name has a loadable
    extension, so that a folder named like a document ("notes.txt/") is reported rather than walked past."""
    walker = _Walker(is_document or (lambda name: False))
    for raw in paths:
        text = str(raw)
        if any(ch in GLOB_CHARS for ch in text) and not os.path.lexists(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                walker.error(text, f"no file matches the pattern {text}")
                continue
            base = _glob_base(text)
            for match in matches:
                walker.visit(Path(match), root=base)
        else:
            path = Path(text)
            walker.visit(path, root=path if path.is_dir() else path.parent, top=True)
    found = walker.found
    return Discovery([found[k] for k in sorted(found)], walker.names, walker.errors)


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading components without wildcards."""
    parts: list[str] = []
    for part in Path(pattern).parts:
        if any(ch in GLOB_CHARS for ch in part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


class _Walker:
    """Walks folders, keeping regular files and turning everything else it meets into a FileError:
    a silently skipped entry is a document that is missing from the index with nobody told."""

    def __init__(self, is_document: Callable[[str], bool]) -> None:
        self.is_document = is_document
        self.found: dict[str, Path] = {}
        self.names: dict[str, str] = {}
        self.errors: list[FileError] = []

    def error(self, path: str | Path, message: str) -> None:
        self.errors.append(FileError(str(path), UnreadablePathError.code, message))

    def visit(
        self, path: Path, *, root: Path, top: bool = False, ancestors: frozenset[tuple[int, int]] = frozenset()
    ) -> None:
        """Add `path` (a file) or walk it (a folder); `ancestors` are the folders above, to catch link loops."""
        try:
            st = path.stat()  # follows symbolic links
        except OSError as exc:
            self.error(path, _unreachable(path, exc, top))
            return
        if stat.S_ISREG(st.st_mode):
            key = str(path.resolve())
            if key not in self.found:
                self.found[key] = path
                self.names[key] = _relative_name(path, root)
            return
        if not stat.S_ISDIR(st.st_mode):
            self.error(path, f"{path} is {_kind(st.st_mode)}, not a regular file")
            return
        if (st.st_dev, st.st_ino) in ancestors:
            self.error(path, f"{path} is a symbolic link loop: it leads back to a folder above it ({path.resolve()})")
            return
        if not top and self.is_document(path.name):
            # walked into, since what it holds may be documents, but named as one it was likely meant to be
            self.error(path, f"{path} is a folder, not a file, though its name looks like a document's")
        try:
            with os.scandir(path) as entries:
                children = sorted(e.name for e in entries if not e.name.startswith("."))
        except OSError as exc:
            self.error(path, f"cannot list the folder {path}: {exc.strerror or exc}")
            return
        below = ancestors | {(st.st_dev, st.st_ino)}
        for name in children:
            self.visit(path / name, root=root, ancestors=below)


def _unreachable(path: Path, exc: OSError, top: bool) -> str:
    """Why `path` cannot be reached: a broken link, a link loop, missing, or unreadable."""
    if exc.errno == errno.ELOOP:
        return f"{path} is a symbolic link loop (too many levels of links)"
    if os.path.islink(path):
        return f"{path} is a broken symbolic link (its target {os.readlink(path)} does not exist)"
    if exc.errno == errno.ENOENT:
        return f"{path} does not exist"
    return f"cannot read {path}: {exc.strerror or exc}"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _relative_name(path: Path, root: Path) -> str:
    """`path` under `root` as a forward-slash path (the file name when it is not under it)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return path.name
    return rel.as_posix() if rel.parts else path.name


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
        stale_job_seconds: float = DEFAULT_STALE_SECONDS,
        name_embedder: Embedder | None = None,
    ) -> None:
        self.stores = stores
        self.embedder = embedder
        #: embeds entity names for query-time linking (default: the chunk embedder)
        self.name_embedder: Embedder = name_embedder or embedder
        # documents ingested under other chunking/embedding settings are re-processed
        self.preparer = Preparer(
            chunker,
            registry,
            max_file_bytes=max_file_bytes,
            max_document_chars=max_document_chars,
            fingerprint=fingerprint,
        )
        self.index_stage = IndexStage(
            stores, embedder, fingerprint=fingerprint, embed_title=embed_title, graph=extractor is not None
        )
        #: stage 2; None when graph extraction is off
        self.graph_stage = (
            GraphStage(stores.ledger, extractor, self.name_embedder) if extractor is not None else None
        )
        self.batch_chunks = batch_chunks
        #: where parsing and chunking (and, on Ray, embedding) run; writes always happen here
        self.executor: Executor = executor or InProcessExecutor()
        self.embed_title = embed_title
        self.stale_job_seconds = stale_job_seconds

    @property
    def fingerprint(self) -> str:
        return self.preparer.fingerprint

    @property
    def extractor(self) -> ExtractorLike | None:
        return self.graph_stage.extractor if self.graph_stage is not None else None

    def embedding_text(self, title: str, text: str) -> str:
        """What is embedded for a chunk (see `embedding_text`)."""
        return embedding_text(title, text, self.embed_title)

    # --- JobSource (what executors read) ---------------------------------------------------
    def known_documents(self, collection: str, paths: Sequence[Path]) -> dict[str, KnownDocument]:
        """resolved path -> what the ledger knows of it, in one query."""
        states = self.stores.ledger.document_states(collection, [str(p.resolve()) for p in paths])
        return {uri: KnownDocument(*state) for uri, state in states.items()}

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
        graph: str = "now",
    ) -> JobReport:
        """Ingest files into a collection; per-file errors are recorded, never raised.

        Stage 1 makes each document searchable as its batch is written; stage 2 (the graph) follows
        in this call when `graph="now"`, or is left `pending` for `build_graph` when `graph="later"`.
        `executor` overrides the ingestor's own for this job (e.g. an API job asking for Ray)."""
        if graph not in GRAPH_MODES:
            raise ConfigurationError(f"unknown graph mode {graph!r}", hint=f"use one of: {', '.join(GRAPH_MODES)}")
        started = time.perf_counter()
        ledger = self.stores.ledger
        runner = executor or self.executor
        progress = _Progress(listener)
        self.repair()
        ledger.ensure_collection(collection)
        report = JobReport(job_id=job_id or uuid.uuid4().hex, collection=collection)
        ledger.create_job(
            report.job_id, collection, {"paths": [str(p) for p in paths], "sync": sync}, executor=runner.name
        )
        try:
            found = discover_sources(paths, self._is_document)
            files = found.files
            report.files_total = len(files) + len(found.errors)
            progress.start(report.files_total)
            ledger.update_job(report.job_id, **report.counts())
            for err in found.errors:
                self._fail(report, err, progress)
            self._run(runner, files, collection, report, progress, should_stop, found.names)
            if sync:
                report.documents_deleted = self._sync(paths, files, collection)
            if report.chunks_added:
                # one HNSW build per job, not per batch: search is exact (brute force) until then
                self.stores.vectors.optimize()
            # a stop that came after the last file changes nothing: the job did all its work
            interrupted = should_stop is not None and should_stop() and report.files_done < report.files_total
            if graph == "now" and not interrupted and self.graph_stage is not None:
                report.graph = self.graph_stage.build(collection, should_stop=should_stop, on_stage=progress.stage)
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

    def build_graph(
        self,
        collection: str,
        *,
        should_stop: Callable[[], bool] | None = None,
        listener: ProgressListener | None = None,
        retry_failed: bool = False,
    ) -> GraphReport:
        """Stage 2 on its own (`kag graph build`, the API's background task): the graph of every
        document of the collection still `pending` (and `failed` ones with `retry_failed`)."""
        if self.graph_stage is None:
            raise ConfigurationError(
                "graph extraction is off", hint="set KAG_GRAPH_ENABLED=true to build the knowledge graph"
            )
        self.repair()
        if retry_failed:
            self.stores.ledger.retry_graph_failures(collection)
        return self.graph_stage.build(collection, should_stop=should_stop, on_stage=_Progress(listener).stage)

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
        the ledger, `deleting` documents finish deleting, stale `running` jobs (owner gone) become
        `interrupted`. Stage 2 needs nothing here: its `pending` documents are simply picked up again."""
        ledger = self.stores.ledger
        fixed = {"reindexed": 0, "deleted": 0, "jobs_interrupted": ledger.interrupt_stale_jobs(self.stale_job_seconds)}
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

    def _save(self, report: JobReport) -> None:
        """Save the job's counts (and heartbeat): after every file, so a crash loses none of them."""
        self.stores.ledger.update_job(report.job_id, **report.counts())

    def _is_document(self, name: str) -> bool:
        """Whether a loader is registered for the name's extension."""
        try:
            self.preparer.registry.for_path(name)
        except UnsupportedFormatError:
            return False
        return True

    def _fail(self, report: JobReport, err: FileError, progress: _Progress) -> None:
        report.documents_failed += 1
        report.errors.append(err)
        self.stores.ledger.add_job_error(report.job_id, err.path, err.code, err.message)
        # the path in the message too: a plain log handler shows no `extra` fields
        log.warning(
            "file failed: %s (%s): %s",
            err.path,
            err.code,
            err.message,
            extra={"path": err.path, "code": err.code, "error": err.message},
        )
        self._save(report)
        progress.file_done(err.path, 0, False)

    def _unchanged(self, report: JobReport, item: Unchanged, progress: _Progress) -> None:
        known = item.known
        chunks = 0
        if known.job_id is not None and known.job_id == report.job_id:
            # written by an earlier, crashed attempt of this very job: the job added it
            chunks = self.stores.ledger.chunk_count(ids.document_id(report.collection, item.source_uri))
            if known.version > 1:
                report.documents_updated += 1
            else:
                report.documents_added += 1
            report.chunks_added += chunks
        else:
            report.documents_unchanged += 1
        self._save(report)
        progress.file_done(item.path, chunks, True)

    def _run(
        self,
        runner: Executor,
        files: list[Path],
        collection: str,
        report: JobReport,
        progress: _Progress,
        should_stop: Callable[[], bool] | None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        # the executor prepares (and maybe embeds) files in order; this thread batches and writes them
        items = runner.items(self, self.preparer, files, collection, self.batch_chunks, should_stop)
        batch: list[Prepared] = []
        size = 0
        try:
            for item in items:
                if isinstance(item, FileError):
                    self._fail(report, item, progress)
                elif isinstance(item, Unchanged):
                    self._unchanged(report, item, progress)
                else:
                    progress.stage(StageProgress(PARSING, item.path))
                    batch.append(item)
                    size += len(item.chunks)
                    if size >= self.batch_chunks:
                        self._write_batch(batch, report, progress, names)
                        batch, size = [], 0
            if batch:
                self._write_batch(batch, report, progress, names)
        finally:
            close = getattr(items, "close", None)  # a generator stops its workers on close
            if close is not None:
                close()

    def _write_batch(
        self,
        batch: Sequence[Prepared],
        report: JobReport,
        progress: _Progress,
        names: Mapping[str, str] | None = None,
    ) -> None:
        """Write prepared documents; `names` maps a source uri to the root-relative path readers are shown."""
        writes = self.index_stage.write(
            batch, report.collection, report.job_id, on_stage=progress.stage, names=names or {}
        )
        for w, p in zip(writes, batch, strict=True):
            if p.is_update:
                report.documents_updated += 1
            else:
                report.documents_added += 1
            report.chunks_added += len(w.chunks)
            # a part that failed alone (an email's broken attachment): reported, the document kept
            for part in p.parsed.metadata.get("attachment_errors", ()):
                err = FileError(f"{p.path}#{part['attachment']}", part["code"], part["message"])
                report.errors.append(err)
                self.stores.ledger.add_job_error(report.job_id, err.path, err.code, err.message)
        self._save(report)
        for w, p in zip(writes, batch, strict=True):
            progress.file_done(p.path, len(w.chunks), True)

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
