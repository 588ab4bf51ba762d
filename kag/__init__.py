"""kag: documents in, grounded answers with span-level citations out."""

from kag.errors import KagError
from kag.records import ChunkDraft, IndexedChunk, ParsedDocument, ScoredChunk, SearchHit
from kag.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "ChunkDraft",
    "IndexedChunk",
    "KagError",
    "ParsedDocument",
    "ScoredChunk",
    "SearchHit",
    "Settings",
    "__version__",
]
