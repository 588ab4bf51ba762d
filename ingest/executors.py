"""Where ingestion work runs: in this process (`local`) or fanned out over a Ray cluster (`ray`).

An executor turns a job's file list into batches of prepared (parsed, chunked, graph-extracted,
maybe embedded) documents, in file order. The `Ingestor` writes every batch itself, through the
same code whatever the executor, so both produce the same ledger rows and index entries.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from kag.errors import ConfigurationError

if TYPE_CHECKING:
    from ingest.loaders.registry import LoaderRegistry
    from ingest.pipeline import Ingestor, Item, Preparer
    from kag.models.embedder import SentenceTransformerEmbedder
    from kag.settings import Settings

EXECUTORS = ("local", "ray")


@runtime_checkable
class Executor(Protocol):
    """Prepares a job's files in batches, in file order; the caller writes each batch."""

    #: recorded in the ledger's job row (`kag jobs`)
    name: str

    def batches(
        self,
        ingestor: Ingestor,
        files: Sequence[Path],
        collection: str,
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[list[Item]]:
        """Batches of about `ingestor.batch_chunks` chunks; stops early once `should_stop()` is true."""
        ...

    def close(self) -> None:
        """Release what the executor holds (worker pools, a Ray session it started)."""
        ...


class InProcessExecutor:
    """Parse, chunk and extract in a producer thread while the calling thread embeds and writes."""

    name = "local"

    def batches(
        self,
        ingestor: Ingestor,
        files: Sequence[Path],
        collection: str,
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[list[Item]]:
        # the two halves overlap instead of adding up; a bounded queue keeps memory flat
        from ingest.pipeline import _Prepared

        batches: queue.Queue[list[Item] | None] = queue.Queue(maxsize=2)
        failure: list[BaseException] = []
        stop = threading.Event()

        def produce() -> None:
            try:
                batch: list[Item] = []
                size = 0
                for path in files:
                    if stop.is_set() or (should_stop is not None and should_stop()):
                        break
                    item = ingestor._prepare(path, collection)
                    batch.append(item)
                    if isinstance(item, _Prepared):
                        size += len(item.chunks)
                    if size >= ingestor.batch_chunks:
                        batches.put(batch)
                        batch, size = [], 0
                if batch:
                    batches.put(batch)
            except BaseException as exc:
                failure.append(exc)
            finally:
                batches.put(None)

        producer = threading.Thread(target=produce, name="kag-ingest-prepare", daemon=True)
        producer.start()
        try:
            while (batch := batches.get()) is not None:
                yield batch
        finally:
            stop.set()
            while producer.is_alive():
                try:
                    batches.get(timeout=0.1)
                except queue.Empty:
                    pass
            producer.join()
        if failure:
            raise failure[0]

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True, slots=True)
class PrepareSpec:
    """How to build the parsing/chunking/extraction and embedding components: plain values, so a Ray
    worker builds its own copies instead of receiving pickled models."""

    embedding_model_path: str | None = None
    embedding_device: str = "cpu"
    embedding_batch_size: int = 64
    # the chunks' vectors must come from the same runtime as the driver's (int8 vectors differ)
    embedding_bulk_runtime: str = "torch"
    embed_title: bool = False
    chunk_size: int = 200
    chunk_overlap: int = 32
    json_text_field: str = "text"
    json_title_field: str = "title"
    spacy_model: str | None = "en_core_web_sm"  # None: no graph extraction
    max_file_bytes: int = 50_000_000
    max_uncompressed_bytes: int = 100_000_000
    max_zip_entries: int = 10_000
    max_zip_ratio: float = 100.0
    max_document_chars: int = 20_000_000
    ocr: str = "off"
    tesseract_cmd: str = "tesseract"
    ocr_language: str = "eng"
    fingerprint: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, fingerprint: str) -> PrepareSpec:
        s = settings
        return cls(
            embedding_model_path=s.embedding_model_path,
            embedding_device=s.embedding_device,
            embedding_batch_size=s.embedding_batch_size,
            embedding_bulk_runtime=s.embedding_bulk_runtime,
            embed_title=s.embed_title,
            chunk_size=s.chunk_size,
            chunk_overlap=s.chunk_overlap,
            json_text_field=s.json_text_field,
            json_title_field=s.json_title_field,
            spacy_model=s.spacy_model if s.graph_enabled else None,
            max_file_bytes=s.max_file_bytes,
            max_uncompressed_bytes=int(s.max_uncompressed_mb * 1_000_000),
            max_zip_entries=s.max_zip_entries,
            max_zip_ratio=s.max_zip_ratio,
            max_document_chars=s.max_document_chars,
            ocr=s.ocr,
            tesseract_cmd=s.tesseract_cmd,
            ocr_language=s.ocr_language,
            fingerprint=fingerprint,
        )

    def build_registry(self) -> LoaderRegistry:
        """The default loader registry under these limits and OCR options."""
        from ingest.loaders import LoaderLimits, default_registry

        limits = LoaderLimits(
            max_uncompressed_bytes=self.max_uncompressed_bytes,
            max_zip_entries=self.max_zip_entries,
            max_zip_ratio=self.max_zip_ratio,
            max_text_chars=self.max_document_chars,
        )
        return default_registry(
            json_text_field=self.json_text_field,
            json_title_field=self.json_title_field,
            limits=limits,
            ocr=self.ocr,
            tesseract_cmd=self.tesseract_cmd,
            ocr_language=self.ocr_language,
        )

    def build_embedder(self, device: str | None = None) -> SentenceTransformerEmbedder:
        from kag.models.embedder import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(
            self.embedding_model_path,
            device=device or self.embedding_device,
            batch_size=self.embedding_batch_size,
            bulk_runtime=self.embedding_bulk_runtime,
        )
        embedder.warm_up()
        return embedder

    def build_preparer(self) -> Preparer:
        from ingest.chunking import Chunker, HFTokenizer
        from ingest.pipeline import Preparer
        from kag.models.embedder import bundled_embedding_model_path

        extractor = None
        if self.spacy_model:
            from ingest.graph import SpacyGraphExtractor

            extractor = SpacyGraphExtractor(self.spacy_model)
            extractor.warm_up()
        tokenizer = HFTokenizer(self.embedding_model_path or bundled_embedding_model_path())
        return Preparer(
            Chunker(tokenizer, self.chunk_size, self.chunk_overlap),
            self.build_registry(),
            extractor=extractor,
            max_file_bytes=self.max_file_bytes,
            max_document_chars=self.max_document_chars,
            fingerprint=self.fingerprint,
        )


def make_executor(settings: Settings, spec: PrepareSpec, name: str | None = None) -> Executor:
    """The executor a setting (or an explicit `name`, e.g. from an API request) asks for."""
    choice = name or settings.ingest_executor
    if choice == "local":
        return InProcessExecutor()
    if choice == "ray":
        from ingest.ray_executor import RayExecutor

        s = settings
        return RayExecutor(
            spec,
            address=s.ray_address,
            num_cpus=s.ray_num_cpus,
            max_in_flight_per_cpu=s.ray_max_in_flight,
            embed_actors=s.ray_embed_actors,
            embed_gpus=s.ray_embed_gpus,
            task_retries=s.ray_task_retries,
        )
    raise ConfigurationError(
        f"unknown ingestion executor {choice!r}", hint=f"use one of: {', '.join(EXECUTORS)} (KAG_INGEST_EXECUTOR)"
    )
