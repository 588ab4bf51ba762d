"""Everything one API process holds: the runtime (stores and models) and the service's own machinery."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kag.api.batching import MicroBatcher
from kag.api.jobs import GraphWorker, IngestWorker
from kag.api.limits import GenerationGate, RateLimiter
from kag.api.metrics import Metrics
from kag.audit import AuditLog
from kag.keys import ApiKey, KeyStore
from kag.settings import Settings

if TYPE_CHECKING:
    from kag.cli.runtime import Runtime
    from pipelines.retrieve import Retriever

log = logging.getLogger("kag.api")

#: how often a key's `last_used_at` is written at most (each write is a ledger transaction)
TOUCH_INTERVAL_S = 60.0


#: after the drain window, how long interrupted answers get to write their audit record and answer
INTERRUPT_GRACE_S = 10.0


def shutdown_drain_s(settings: Settings) -> float:
    """How long in-flight requests may run on after SIGTERM: KAG_API_SHUTDOWN_TIMEOUT_S, else the request
    timeout (the longest a non-streamed answer may take, so with the defaults no answer is cut)."""
    if settings.api_shutdown_timeout_s is not None:
        return settings.api_shutdown_timeout_s
    return settings.api_request_timeout_s


@dataclass
class Services:
    settings: Settings
    runtime: Runtime
    metrics: Metrics
    tracer_provider: Any = None
    ready: bool = False
    keys: KeyStore = field(init=False)
    audit: AuditLog = field(init=False)
    rate_limiter: RateLimiter = field(init=False)
    gate: GenerationGate = field(init=False)
    batcher: MicroBatcher = field(init=False)
    worker: IngestWorker = field(init=False)
    graph_worker: GraphWorker = field(init=False)
    #: set when the drain window after SIGTERM has run out: answers still generating stop and are audited
    interrupt: threading.Event = field(default_factory=threading.Event)
    _drain_timer: threading.Timer | None = None
    _touched: dict[str, float] = field(default_factory=dict)
    _retrievers: dict[str, Retriever] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def start(self) -> None:
        """Open the stores, load the models, finish crashed work, resume upload jobs (blocking)."""
        s, rt, m = self.settings, self.runtime, self.metrics
        ledger = rt.stores.ledger  # opens the stores (and takes the data dir lock) once for this process
        self.keys = KeyStore(ledger)
        self.audit = rt.audit
        self.rate_limiter = RateLimiter(
            s.api_rate_limit_per_minute, s.api_rate_limit_burst, on_limited=m.rate_limited.inc
        )
        self.gate = GenerationGate(
            s.api_generation_concurrency,
            s.api_generation_queue_size,
            s.api_generation_queue_timeout_s,
            on_change=m.set_generation,
        )
        # warm every model before the first request, so no request pays for loading
        rt.embedder.warm_up()
        rt.generator.warm_up()
        pipeline = rt.answer_pipeline
        pipeline.generator.count_tokens("warm up")
        if s.graph_enabled:
            rt.extractor.warm_up()
        ingestor = rt.ingestor
        ingestor.repair()
        self.batcher = MicroBatcher(
            rt.embedder.embed,
            max_batch=s.api_embed_batch_size,
            max_wait_s=s.api_embed_batch_wait_ms / 1000,
            on_batch=lambda requests, texts: m.embed_batches.observe(texts),
        )
        # stage 2 (the graph) of uploads runs on its own thread, after each job's stage 1
        self.graph_worker = GraphWorker(rt, on_finished=self._on_collection_written)
        self.worker = IngestWorker(
            rt,
            self.uploads_dir,
            queue_size=s.api_ingest_queue_size,
            on_file=self._on_file,
            on_depth=m.ingest_queue.set,
            on_finished=self._on_collection_written,
            on_indexed=self.graph_worker.request if s.graph_enabled else None,
        )
        self.graph_worker.resume()
        self.graph_worker.start()
        self.worker.resume()
        self.worker.start()
        self.ready = True

    def begin_shutdown(self, drain_s: float) -> None:
        """SIGTERM: stop reporting ready, and interrupt the answers still running after `drain_s` (idempotent)."""
        self.ready = False
        if self._drain_timer is None:
            self._drain_timer = threading.Timer(drain_s, self.interrupt.set)
            self._drain_timer.daemon = True
            self._drain_timer.start()

    def stop(self, *, close_runtime: bool) -> None:
        """Stop the ingestion worker at a safe point, the batcher, the tracer; close the runtime if owned."""
        self.ready = False
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        if hasattr(self, "worker") and not self.worker.stop(timeout=shutdown_drain_s(self.settings)):
            log.warning("the ingestion worker did not stop in time; its job will be resumed at the next start")
        if hasattr(self, "graph_worker") and not self.graph_worker.stop(timeout=shutdown_drain_s(self.settings)):
            log.warning("the graph worker did not stop in time; pending documents are built at the next start")
        if hasattr(self, "batcher"):
            self.batcher.close()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if close_runtime:
            self.runtime.close()

    # --- helpers for routes ---------------------------------------------------------------
    def _on_file(self, chunks: int, ok: bool) -> None:
        self.metrics.chunks.inc(chunks)
        self.metrics.files.labels(outcome="ok" if ok else "failed").inc()

    def _on_collection_written(self, collection: str) -> None:
        self.runtime.graph_cache.invalidate(collection)

    def collection_written(self, collection: str) -> None:
        self._on_collection_written(collection)

    def touch_key(self, key: ApiKey) -> None:
        """Record the key's use, at most once a minute per key."""
        now = time.monotonic()
        with self._lock:
            last = self._touched.get(key.id)
            if last is not None and now - last < TOUCH_INTERVAL_S:
                return
            self._touched[key.id] = now
        try:
            self.keys.touch(key.id)
        except Exception:  # bookkeeping must never fail a request
            log.warning("could not record the key's last use", extra={"key_id": key.id})

    def known_collections(self) -> set[str]:
        return set(self.runtime.stores.ledger.collections())

    def retriever(self, mode: str) -> Retriever:
        with self._lock:
            retriever = self._retrievers.get(mode)
            if retriever is None:
                retriever = self._retrievers[mode] = self.runtime.retriever(mode)
        return retriever
