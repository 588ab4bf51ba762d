"""How to build ingestion's components from plain values, so a Ray worker builds its own copies
instead of receiving pickled models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.graph import SpacyGraphExtractor
    from ingest.loaders.registry import LoaderRegistry
    from ingest.stages.prepare import Preparer
    from kag.models.embedder import SentenceTransformerEmbedder
    from kag.settings import Settings


@dataclass(frozen=True, slots=True)
class PrepareSpec:
    """The parsing/chunking, graph-extraction and embedding components as plain values."""

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

    def build_extractor(self) -> SpacyGraphExtractor | None:
        """The stage-2 graph extractor, warmed up; None when graph extraction is off."""
        if not self.spacy_model:
            return None
        from ingest.graph import SpacyGraphExtractor

        extractor = SpacyGraphExtractor(self.spacy_model)
        extractor.warm_up()
        return extractor

    def build_preparer(self) -> Preparer:
        from ingest.chunking import Chunker, HFTokenizer
        from ingest.stages.prepare import Preparer
        from kag.models.embedder import bundled_embedding_model_path

        tokenizer = HFTokenizer(self.embedding_model_path or bundled_embedding_model_path())
        return Preparer(
            Chunker(tokenizer, self.chunk_size, self.chunk_overlap),
            self.build_registry(),
            max_file_bytes=self.max_file_bytes,
            max_document_chars=self.max_document_chars,
            fingerprint=self.fingerprint,
        )
