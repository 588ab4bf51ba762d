"""Small documents whose graphs disagree, for the graph view tests (CLI, API, audit)."""

from __future__ import annotations

import hashlib
from typing import Any

from kag.records import ChunkDraft

# the evidence sits in a later chunk, so its document offsets differ from its chunk offsets
HORMONES = "Hormone notes\n\nThe pancreas makes several hormones.\n\nInsulin opposes glucagon in the liver.\n"
REGULATION = "Regulation notes\n\nInsulin affects glucagon.\n"
TRIAL = "Trial report\n\nA controlled trial was run.\n\nInsulin opposes glucagon.\n"
METABOLISM = "Metabolism notes\n\nInsulin regulates metabolism.\n"


def paragraph_chunks(text: str) -> list[ChunkDraft]:
    """One chunk per paragraph, with its document offsets."""
    chunks, at = [], 0
    for part in text.split("\n\n"):
        start = text.index(part, at)
        at = start + len(part)
        if part.strip():
            chunks.append(ChunkDraft(len(chunks), part, start, at, len(part.split())))
    return chunks


def write_doc(ledger: Any, extractor: Any, collection: str, source: str, text: str, meta: dict[str, Any] | None = None):
    """Write one document with the real extractor's graph, as ingestion does."""
    ledger.ensure_collection(collection)
    chunks = paragraph_chunks(text)
    return ledger.write_document(
        collection=collection,
        source_uri=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        mime_type="text/markdown",
        title=text.split("\n", 1)[0],
        text=text,
        size_bytes=len(text),
        metadata=meta or {},
        chunks=chunks,
        graph=extractor.extract(chunks),
    )
