"""Stage 1, second half: embed a batch of prepared documents and write them to the ledger, Qdrant and
the lexical index. When `write` returns, every document of the batch is `indexed`: searchable, dense
and lexical, whatever stage 2 (the graph) has done yet."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ingest.protocols import EMBEDDING, INDEXING, Prepared, StageProgress, embedding_text, title_of
from kag.ledger.store import DocumentWrite
from kag.models.embedder import Embedder
from kag.stores.bundle import Stores


class IndexStage:
    """Embeds and indexes batches of prepared documents; idempotent (ids are content hashes)."""

    def __init__(
        self,
        stores: Stores,
        embedder: Embedder,
        *,
        fingerprint: str = "",
        embed_title: bool = False,
        graph: bool = True,
    ) -> None:
        self.stores = stores
        self.embedder = embedder
        self.fingerprint = fingerprint
        self.embed_title = embed_title
        #: whether written documents wait for stage 2 (graph status `pending`) or have none (graph off)
        self.graph = graph

    def write(
        self,
        batch: Sequence[Prepared],
        collection: str,
        job_id: str | None = None,
        on_stage: Callable[[StageProgress], None] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> list[DocumentWrite]:
        """Embed, write the ledger rows (status `indexing`), upsert both indexes, mark `indexed`;
        `names` maps a source uri to the root-relative path readers are shown (default: the file name)."""
        names = names or {}
        if not batch:
            return []
        ledger = self.stores.ledger
        notify = on_stage or (lambda progress: None)
        # embed first: a crash while embedding leaves the stores untouched
        if all(p.vectors is not None for p in batch):
            vectors = np.concatenate([p.vectors for p in batch if p.vectors is not None])
        else:
            notify(StageProgress(EMBEDDING))
            texts = [embedding_text(title_of(p), c.text, self.embed_title) for p in batch for c in p.chunks]
            vectors = self.embedder.embed(texts)
        for p in batch:
            notify(StageProgress(EMBEDDING, p.path))
        notify(StageProgress(INDEXING))
        writes = []
        for p in batch:
            meta = dict(p.parsed.metadata)
            meta["_kag_fingerprint"] = self.fingerprint
            if p.parsed.pages:
                meta["pages"] = len(p.parsed.pages)
            writes.append(
                ledger.write_document(
                    collection=collection,
                    source_uri=p.source_uri,
                    sha256=p.sha256,
                    mime_type=p.parsed.mime_type,
                    title=title_of(p),
                    text=p.parsed.text,
                    size_bytes=p.size,
                    metadata=meta,
                    chunks=p.chunks,
                    graph=None,
                    graph_pending=self.graph,
                    job_id=job_id,
                    pages=p.parsed.pages,
                    source_path=names.get(p.source_uri, Path(p.path).name),
                )
            )
        updated = [w.document_id for w, p in zip(writes, batch, strict=True) if p.is_update]
        if updated:
            self.stores.vectors.delete_documents(updated)
            self.stores.fulltext.delete_documents(updated)
        all_chunks = [c for w in writes for c in w.chunks]
        self.stores.vectors.upsert(all_chunks, vectors)
        self.stores.fulltext.add(all_chunks)
        self.stores.fulltext.commit()
        self.stores.vectors.flush()
        ledger.mark_indexed([w.document_id for w in writes])
        return writes
