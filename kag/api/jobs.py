"""Ingestion of uploaded files by one background worker thread, with a bounded queue and resume on restart.

An upload is staged under `<data dir>/uploads/.staging/<job id>/` and recorded as a `queued` job in
the ledger before the request returns. The worker moves the files to `<data dir>/uploads/<collection>/`
(so uploading a file of the same name again updates that document) and ingests them. On shutdown the
running job stops at a safe point (between files, after the batch being written) and is recorded
`interrupted`; at start-up, queued and interrupted upload jobs run again under the same id, and
ingestion's idempotence makes the re-run finish the work without duplicating any of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kag.errors import OverloadedError
from kag.ledger.models import JobStatus

if TYPE_CHECKING:
    from kag.cli.runtime import Runtime

log = logging.getLogger("kag.api.jobs")

SOURCE = "api-upload"
STAGING = ".staging"


@dataclass
class LiveProgress:
    """Per-file progress of the running job (the ledger row is updated per written batch)."""

    files_total: int = 0
    files_done: int = 0
    chunks: int = 0
    failed: int = 0
    current: list[str] = field(default_factory=list)


class _Listener:
    def __init__(self, progress: LiveProgress, on_chunks: Callable[[int, bool], None]) -> None:
        self.progress = progress
        self.on_chunks = on_chunks

    def on_start(self, files_total: int) -> None:
        self.progress.files_total = files_total

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        self.progress.files_done += 1
        self.progress.chunks += chunks
        if not ok:
            self.progress.failed += 1
        self.on_chunks(chunks, ok)


class IngestWorker:
    """One thread that runs upload jobs in order; at most `queue_size` wait."""

    def __init__(
        self,
        runtime: Runtime,
        uploads_dir: Path,
        *,
        queue_size: int,
        on_file: Callable[[int, bool], None] = lambda chunks, ok: None,
        on_depth: Callable[[int], None] = lambda depth: None,
        on_finished: Callable[[str], None] = lambda collection: None,
        on_indexed: Callable[[str], None] | None = None,
    ) -> None:
        self.runtime = runtime
        #: called with the collection once a job's stage 1 is done: stage 2 runs there (None: in the job)
        self._on_indexed = on_indexed
        self.uploads_dir = uploads_dir
        self.queue_size = queue_size
        self._on_file = on_file
        self._on_depth = on_depth
        self._on_finished = on_finished
        self._queue: deque[tuple[str, str]] = deque()  # (job id, collection)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._running: tuple[str, str] | None = None
        self._progress: dict[str, LiveProgress] = {}
        self._thread: threading.Thread | None = None

    # --- paths ----------------------------------------------------------------------------
    def staging_dir(self, job_id: str) -> Path:
        return self.uploads_dir / STAGING / job_id

    def collection_dir(self, collection: str) -> Path:
        return self.uploads_dir / collection

    # --- control --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kag-ingest-worker", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the running job to stop at its next safe point, without waiting (called on SIGTERM)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float = 60.0) -> bool:
        """Ask the running job to stop at its next safe point and wait for it; True if the thread ended."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def depth(self) -> int:
        return len(self._queue) + (1 if self._running else 0)

    def check_capacity(self) -> None:
        """OverloadedError (503) when the queue is full, before the caller stages anything."""
        if len(self._queue) >= self.queue_size:
            raise OverloadedError(
                f"{len(self._queue)} ingestion jobs are waiting (limit {self.queue_size})",
                retry_after=30,
                hint="retry later, or raise KAG_API_INGEST_QUEUE_SIZE",
            )

    def submit(self, job_id: str, collection: str) -> None:
        with self._cond:
            self._queue.append((job_id, collection))
            self._cond.notify()
        self._on_depth(self.depth)

    def resume(self) -> list[str]:
        """Queue upload jobs left queued or interrupted by an earlier process, oldest first."""
        ledger = self.runtime.stores.ledger
        rows = ledger.jobs(limit=10_000, statuses=[JobStatus.QUEUED, JobStatus.INTERRUPTED])
        resumed = []
        for row in sorted(rows, key=lambda r: r.started_at):
            if (row.params or {}).get("source") != SOURCE:
                continue
            with self._cond:
                self._queue.append((row.id, row.collection))
                self._cond.notify()
            resumed.append(row.id)
        self._on_depth(self.depth)
        if resumed:
            log.info("resuming upload jobs", extra={"jobs": resumed})
        return resumed

    def busy_collections(self) -> set[str]:
        """Collections with a queued or running upload job."""
        with self._cond:
            busy = {c for _, c in self._queue}
            if self._running:
                busy.add(self._running[1])
        return busy

    def progress(self, job_id: str) -> LiveProgress | None:
        return self._progress.get(job_id)

    def queue_position(self, job_id: str) -> int | None:
        with self._cond:
            for i, (queued, _) in enumerate(self._queue):
                if queued == job_id:
                    return i + 1
        return None

    # --- the thread -----------------------------------------------------------------------
    def _next(self) -> tuple[str, str] | None:
        with self._cond:
            while not self._queue and not self._stop.is_set():
                self._cond.wait()
            if self._stop.is_set():
                return None
            self._running = self._queue.popleft()
            return self._running

    def _loop(self) -> None:
        while (item := self._next()) is not None:
            job_id, collection = item
            try:
                self._run(job_id, collection)
            except Exception:
                log.exception("upload job failed", extra={"job_id": job_id})
            finally:
                with self._cond:
                    self._running = None
                self._progress.pop(job_id, None)
                self._on_depth(self.depth)
                self._on_finished(collection)

    def _run(self, job_id: str, collection: str) -> None:
        ledger = self.runtime.stores.ledger
        job, _ = ledger.get_job(job_id)
        files: list[str] = list((job.params or {}).get("files", []))
        staging = self.staging_dir(job_id)
        target = self.collection_dir(collection).resolve()
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            staged = staging / name
            if staged.exists():  # already moved when an interrupted run is resumed
                os.replace(staged, target / name)
        progress = self._progress[job_id] = LiveProgress()
        report = self.runtime.ingestor.ingest(
            [target / name for name in files],
            collection,
            job_id=job_id,
            should_stop=self._stop.is_set,
            listener=_Listener(progress, self._on_file),
            graph="later" if self._on_indexed is not None else "now",
        )
        if self._on_indexed is not None:
            self._on_indexed(collection)
        if report.status != JobStatus.INTERRUPTED:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("upload job finished", extra={"job_id": job_id, "status": report.status})


class GraphWorker:
    """One background thread that runs stage 2 (the graph) of collections whose stage 1 finished."""

    def __init__(self, runtime: Runtime, *, on_finished: Callable[[str], None] = lambda collection: None) -> None:
        self.runtime = runtime
        self._on_finished = on_finished
        self._wanted: dict[str, None] = {}  # collections to build, in request order
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.running: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kag-graph-worker", daemon=True)
        self._thread.start()

    def request(self, collection: str) -> None:
        """Build the collection's pending graph soon (a collection asked for twice is built once)."""
        with self._cond:
            self._wanted[collection] = None
            self._cond.notify()

    def resume(self) -> list[str]:
        """Ask for every collection with documents still `pending` (a server stopped mid-way)."""
        ledger = self.runtime.stores.ledger
        names = [c for c in ledger.collections() if ledger.graph_pending(c)]
        for name in names:
            self.request(name)
        return names

    def idle(self) -> bool:
        with self._cond:
            return not self._wanted and self.running is None

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop after the document being extracted; True if the thread ended."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next(self) -> str | None:
        with self._cond:
            while not self._wanted and not self._stop.is_set():
                self._cond.wait()
            if self._stop.is_set():
                return None
            collection = next(iter(self._wanted))
            del self._wanted[collection]
            self.running = collection
            return collection

    def _loop(self) -> None:
        while (collection := self._next()) is not None:
            try:
                report = self.runtime.ingestor.build_graph(collection, should_stop=self._stop.is_set)
                log.info("graph built", extra=report.to_dict())
            except Exception:
                log.exception("graph build failed", extra={"collection": collection})
            finally:
                with self._cond:
                    self.running = None
                self._on_finished(collection)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return str((value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat())


def job_view(
    row: Any, errors: list[Any], worker: IngestWorker | None, graph: dict[str, int] | None = None
) -> dict[str, Any]:
    """A job as the API shows it: counts, progress, stage-2 counts of its documents (`graph`, from
    `Ledger.graph_counts_by_job`), per-file errors with upload-relative names."""
    graph = graph or {"pending": 0, "done": 0, "failed": 0}
    params = row.params or {}
    live = worker.progress(row.id) if worker is not None and row.status == JobStatus.RUNNING else None
    files_total = max(row.files_total, live.files_total if live else 0) or len(params.get("files", []))
    files_done = max(row.files_done, live.files_done if live else 0)
    # uploaded files are shown by their names, never by where the server keeps them
    prefix = str(worker.collection_dir(row.collection).resolve()) + os.sep if worker is not None else None

    def shown(path: str) -> str:
        return path[len(prefix) :] if prefix and path.startswith(prefix) else path

    return {
        "id": row.id,
        "collection": row.collection,
        "status": row.status,
        "queue_position": worker.queue_position(row.id) if worker is not None else None,
        "files": list(params.get("files", [])),
        "files_total": files_total,
        "files_done": files_done,
        "progress": round(files_done / files_total, 4) if files_total else (1.0 if row.finished_at else 0.0),
        "documents_added": row.documents_added,
        "documents_updated": row.documents_updated,
        "documents_unchanged": row.documents_unchanged,
        "documents_failed": row.documents_failed,
        "chunks_added": max(row.chunks_added, live.chunks if live else 0),
        "stage": _stage(row.status, graph),
        "graph_pending": graph["pending"],
        "graph_done": graph["done"],
        "graph_failed": graph["failed"],
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "error": row.error,
        "errors": [
            {"file": shown(e.path), "code": e.code, "message": e.message.replace(prefix or "\0", "")} for e in errors
        ],
    }


def _stage(status: str, graph: dict[str, int]) -> str:
    """Where a job is: `queued`, `indexing` (stage 1), `graph` (stage 2 of its documents), or `done`."""
    if status == JobStatus.QUEUED:
        return "queued"
    if status == JobStatus.RUNNING:
        return "indexing"
    return "graph" if graph["pending"] else "done"
