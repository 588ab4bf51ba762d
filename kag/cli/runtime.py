"""Assemble the object graph from settings: the only place the CLI builds stores and models."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from kag.settings import Settings
from kag.stores.bundle import Stores, open_stores

if TYPE_CHECKING:
    from ingest.pipeline import Ingestor
    from kag.models.embedder import SentenceTransformerEmbedder
    from pipelines.retrieve import Retriever

SCHEMA_VERSION = 1


class Runtime:
    """Lazily built collaborators for one CLI invocation or one API process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stores: Stores | None = None

    @cached_property
    def embedder(self) -> SentenceTransformerEmbedder:
        from kag.models.embedder import SentenceTransformerEmbedder

        s = self.settings
        embedder = SentenceTransformerEmbedder(
            s.embedding_model_path, device=s.embedding_device, batch_size=s.embedding_batch_size
        )
        embedder.warm_up()
        return embedder

    @property
    def stores(self) -> Stores:
        if self._stores is None:
            s = self.settings
            self._stores = open_stores(
                data_dir=s.data_dir,
                database_url=s.resolved_database_url,
                dim=self.embedder.dim,
                qdrant_url=s.qdrant_url,
                qdrant_api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
                qdrant_collection=s.qdrant_collection,
            )
        return self._stores

    @cached_property
    def extractor(self):
        from ingest.graph import SpacyGraphExtractor

        extractor = SpacyGraphExtractor(self.settings.spacy_model)
        extractor.warm_up()
        return extractor

    @property
    def fingerprint(self) -> str:
        s = self.settings
        return (
            f"schema={SCHEMA_VERSION};embedder={self.embedder.name};chunk={s.chunk_size}/{s.chunk_overlap};"
            f"graph={int(s.graph_enabled)};json={s.json_text_field}/{s.json_title_field}"
        )

    @cached_property
    def ingestor(self) -> Ingestor:
        from ingest.chunking import Chunker, HFTokenizer
        from ingest.loaders import default_registry
        from ingest.pipeline import Ingestor

        s = self.settings
        return Ingestor(
            self.stores,
            self.embedder,
            Chunker(HFTokenizer(self.embedder.model_path), s.chunk_size, s.chunk_overlap),
            default_registry(json_text_field=s.json_text_field, json_title_field=s.json_title_field),
            extractor=self.extractor if s.graph_enabled else None,
            max_file_bytes=s.max_file_bytes,
            batch_chunks=s.index_batch_size,
            fingerprint=self.fingerprint,
        )

    def retriever(self, mode: str) -> Retriever:
        from kag.stores.graph import GraphCache
        from pipelines.retrieve import DenseRetriever, GraphRetriever, HybridRetriever, LexicalRetriever

        stores = self.stores
        dense = DenseRetriever(self.embedder, stores.vectors)
        lexical = LexicalRetriever(stores.fulltext)
        if mode == "dense":
            return dense
        if mode == "lexical":
            return lexical
        graph = GraphRetriever(stores.ledger, self.extractor, GraphCache(stores.ledger))
        if mode == "graph":
            return graph
        return HybridRetriever({"dense": dense, "lexical": lexical, "graph": graph})

    def close(self) -> None:
        if self._stores is not None:
            self._stores.close()
            self._stores = None
