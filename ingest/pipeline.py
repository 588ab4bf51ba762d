"""Batch ingestion: files -> loader -> chunks -> graph -> embeddings -> ledger -> indexes."""

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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ingest.loaders.base import check_text_length
from kag import ids
from kag.errors import DocumentError, FileTooLargeError, KagError, UnreadablePathError, UnsupportedFormatError
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
            log.exception("unexpected error while preparing %s", shown, extra={"path": shown})
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
    ) -> None:
        from ingest.executors import InProcessExecutor

        self.stores = stores
        self.embedder = embedder
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
            found = discover_sources(paths, self._is_document)
            files = found.files
            report.files_total = len(files) + len(found.errors)
            if listener:
                listener.on_start(report.files_total)
            for err in found.errors:
                self._fail(report, err, listener)
            self._run(runner, files, collection, report, listener, should_stop, found.names)
            if sync:
                report.documents_deleted = self._sync(paths, files, collection)
            # the names of entities this job (or an interrupted earlier one) added, embedded once, in
            # large batches, so query-time linking reads vectors instead of running the model
            named = embed_entity_names(ledger, self.embedder, collection)
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

    def _is_document(self, name: str) -> bool:
        """Whether a loader is registered for the name's extension."""
        try:
            self.preparer.registry.for_path(name)
        except UnsupportedFormatError:
            return False
        return True

    def _fail(self, report: JobReport, err: FileError, listener: ProgressListener | None) -> None:
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
        names: Mapping[str, str] | None = None,
    ) -> None:
        # the executor prepares (and maybe embeds) batches in file order; this thread writes them
        batches = runner.batches(self, files, collection, should_stop)
        try:
            for batch in batches:
                self._write_batch(batch, report, listener, names or {})
                self.stores.ledger.update_job(report.job_id, **report.counts())
        finally:
            close = getattr(batches, "close", None)  # a generator stops its workers on close
            if close is not None:
                close()

    def _prepare(self, path: Path, collection: str) -> Item:
        """Read, parse, chunk and extract one file; returns the source uri when it is unchanged."""
        row = self.stores.ledger.find_document(collection, str(path.resolve()))
        return self.preparer.prepare(path, collection, KnownDocument.of(row))

    def _write_batch(
        self,
        batch: Sequence[Item],
        report: JobReport,
        listener: ProgressListener | None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        """Write prepared documents; `names` maps a source uri to the root-relative path readers are shown."""
        names = names or {}
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
                    pages=p.parsed.pages,
                    source_path=names.get(p.source_uri, Path(p.path).name),
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
