"""Typed, frozen records that cross stage boundaries."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PageSpan:
    """A page of a paged document: `text[start:end]` is its text."""

    number: int  # 1-based
    start: int
    end: int


def page_range(pages: Sequence[PageSpan], start: int, end: int) -> tuple[int, int] | None:
    """(first, last) page of `text[start:end]`, or None without pages; `pages` sorted by start.

    A position between two pages (the separator) counts to the page before it."""
    if not pages:
        return None
    starts = [p.start for p in pages]

    def at(pos: int) -> int:
        return pages[max(0, bisect_right(starts, pos) - 1)].number

    first = at(start)
    return first, max(first, at(max(start, end - 1)))


@dataclass(frozen=True, slots=True)
class HeadingSpan:
    """A heading: `text[start:end]` is the heading's own text; its section runs until the next heading
    of the same or a higher level."""

    level: int  # 1 = top
    title: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """What a loader yields: plain text plus structure, with offsets into that text."""

    text: str
    mime_type: str
    title: str | None = None
    pages: tuple[PageSpan, ...] = ()
    headings: tuple[HeadingSpan, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    """A chunk before it has an identity: `document.text[char_start:char_end] == text`."""

    ordinal: int
    text: str
    char_start: int
    char_end: int
    token_count: int
    page: int | None = None
    heading_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    """What the indexes need to know about one chunk."""

    chunk_id: str
    document_id: str
    collection: str
    text: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A search hit from one index: chunk id, score (higher is better) and where it lives."""

    chunk_id: str
    score: float
    document_id: str = ""
    collection: str = ""


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """An entity extracted from text, already normalized."""

    key: str  # normalized name: the dedup key within a collection
    name: str  # display name (most frequent surface form)
    label: str  # spaCy NER label or KEYPHRASE


@dataclass(frozen=True, slots=True)
class MentionRecord:
    """An entity occurrence: `chunk.text[start:end]` is the surface form (the ledger stores the offsets
    document-absolute: `document.text[chunk.char_start + start : chunk.char_start + end]`)."""

    entity_key: str
    chunk_ordinal: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RelationRecord:
    """A typed relation with strength in [0, 1] and the sentence that evidences it."""

    source_key: str
    target_key: str
    type: str
    strength: float
    chunk_ordinal: int
    # offsets of the evidencing sentence within the chunk text; the ledger (and so the graph) holds them
    # document-absolute, `chunk.char_start` added, so `document.text[evidence_start:evidence_end]` is it
    evidence_start: int
    evidence_end: int


@dataclass(frozen=True, slots=True)
class GraphExtraction:
    """Entities, mentions and relations found in the chunks of one document."""

    entities: tuple[EntityRecord, ...] = ()
    mentions: tuple[MentionRecord, ...] = ()
    relations: tuple[RelationRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A ranked chunk with its provenance: `document.text[char_start:char_end] == text`."""

    chunk_id: str
    score: float
    document_id: str
    collection: str
    title: str
    source_uri: str
    text: str
    char_start: int
    char_end: int
    page: int | None
    heading_path: tuple[str, ...]
    #: the document's pages, so that evidence inside the chunk gets its own page (not the chunk's first)
    page_spans: tuple[PageSpan, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "score": self.score,
            "document_id": self.document_id,
            "collection": self.collection,
            "title": self.title,
            "source_uri": self.source_uri,
            "page": self.page,
            "heading_path": list(self.heading_path),
            "char_start": self.char_start,
            "char_end": self.char_end,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class Source:
    """A numbered source given to the LLM: `[number]` in the answer refers to it."""

    number: int
    hit: SearchHit


@dataclass(frozen=True, slots=True)
class Citation:
    """Evidence for one answer sentence: `document.text[char_start:char_end] == quote`; `page` is the page
    the quote starts on and `pages` its (first, last) page (None for documents without pages)."""

    source_number: int
    document_id: str
    chunk_id: str
    title: str
    page: int | None
    char_start: int
    char_end: int
    quote: str
    pages: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_number,
            "document_id": self.document_id,
            "chunk_id": self.chunk_id,
            "title": self.title,
            "page": self.page,
            "pages": list(self.pages) if self.pages is not None else None,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "quote": self.quote,
        }


@dataclass(frozen=True, slots=True)
class SentenceVerdict:
    """One answer sentence after verification."""

    text: str  # the sentence as shown (after the policy: may be an extractive replacement)
    original: str  # the sentence as the model wrote it
    supported: bool
    score: float
    action: str  # "kept", "flagged", "dropped", "replaced"; "added": a quote of a hop's evidence (multi-hop)
    citations: tuple[Citation, ...] = ()

    @property
    def model_supported(self) -> bool:
        """Whether the sentence the model wrote is backed by the sources (a replaced one was not: the
        shown text is then a quote, supported by construction)."""
        return self.action == "kept"

    @property
    def label(self) -> str:
        """What a reader is told about this sentence."""
        return VERDICT_LABELS.get(self.action, self.action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "original": self.original,
            "supported": self.supported,
            "model_supported": self.model_supported,
            "label": self.label,
            "score": round(self.score, 4),
            "action": self.action,
            "citations": [c.to_dict() for c in self.citations],
        }


VERDICT_LABELS = {
    "kept": "supported",
    "replaced": "replaced (model sentence unsupported)",
    "flagged": "unsupported (flagged)",
    "dropped": "dropped (unsupported)",
    "added": "added (evidence of a hop, quoted)",
}


def verdict_summary(sentences: Sequence[SentenceVerdict]) -> str:
    """ "1/3 model sentences supported, 2 replaced by quotes": a replaced sentence is not counted supported."""
    added = sum(s.action == "added" for s in sentences)
    sentences = [s for s in sentences if s.action != "added"]  # quotes kag added are no model sentences
    if not sentences:
        return "no model sentences" + (f", {added} hop quote{'s' if added != 1 else ''} added" if added else "")
    kept = sum(s.action == "kept" for s in sentences)
    parts = [f"{kept}/{len(sentences)} model sentences supported"]
    replaced = sum(s.action == "replaced" for s in sentences)
    if replaced:
        parts.append(f"{replaced} replaced by quote{'s' if replaced != 1 else ''}")
    dropped = sum(s.action == "dropped" for s in sentences)
    if dropped:
        parts.append(f"{dropped} dropped")
    flagged = sum(s.action == "flagged" for s in sentences)
    if flagged:
        parts.append(f"{flagged} flagged")
    if added:
        parts.append(f"{added} hop quote{'s' if added != 1 else ''} added")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Verification:
    """The verified answer: sentences with verdicts, or an abstention."""

    answer: str
    sentences: tuple[SentenceVerdict, ...]
    abstained: bool
    policy: str
    reason: str = ""
    conclusion: str | None = None  # "yes" / "no" that a yes-no answer starts with (the model's conclusion)

    @property
    def citations(self) -> tuple[Citation, ...]:
        """The evidence of the sentences shown; a dropped sentence keeps its own in its verdict only."""
        seen: dict[tuple[str, int, int], Citation] = {}
        for s in self.sentences:
            if s.action == "dropped":
                continue
            for c in s.citations:
                seen.setdefault((c.document_id, c.char_start, c.char_end), c)
        return tuple(seen.values())
