"""Token-budgeted chunking that cuts at headings, then paragraphs, sentences, lines and words."""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from kag.errors import ConfigurationError, MissingDependencyError, ModelLoadError
from kag.records import ChunkDraft, HeadingSpan, ParsedDocument

Span = tuple[int, int]


@runtime_checkable
class Tokenizer(Protocol):
    """Splits text into tokens, reporting each token's character span (no special tokens)."""

    def token_spans(self, text: str) -> list[Span]: ...


class HFTokenizer:
    """A Hugging Face fast tokenizer from a local folder, loaded on first use."""

    def __init__(self, model_path: str) -> None:
        self.model_path = str(model_path)
        self._tokenizer: Any = None
        # a fast tokenizer's Rust state is not re-entrant ("Already borrowed" across threads)
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the tokenizer now instead of on the first call."""
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = _load_fast_tokenizer(self.model_path)

    def token_spans(self, text: str) -> list[Span]:
        if not text:
            return []
        if self._tokenizer is None:
            self.warm_up()
        with self._lock:
            encoding = self._tokenizer(
                text,
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
                truncation=False,
                verbose=False,  # silences "sequence longer than the model maximum": we cut later
            )
        return [(start, end) for start, end in encoding["offset_mapping"] if end > start]


def _load_fast_tokenizer(path: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError("transformers is not installed", hint="pip install transformers") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # any load failure becomes one clear error
        raise ModelLoadError(
            f"cannot load a tokenizer from {path}: {exc}",
            hint="set KAG_EMBEDDING_MODEL_PATH to a local model folder that has tokenizer files",
        ) from exc
    if not tokenizer.is_fast:
        raise ModelLoadError(
            f"the tokenizer in {path} is not a fast (Rust) tokenizer, so it cannot report character offsets",
            hint="use a model folder that has a tokenizer.json",
        )
    return tokenizer


# boundary before a paragraph: a blank line
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
# a sentence end: terminal punctuation, closing quotes/brackets, then whitespace (or CJK full stops)
_SENTENCE = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+[」』”’)]*\s*")
_LINE = re.compile(r"\n")
_LAST_WORD = re.compile(r"(\w+)\W*$")
# abbreviations whose period does not end a sentence ("Dr. Smith", "Fig. 3")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "fig",
        "figs",
        "eq",
        "eqs",
        "no",
        "nos",
        "vol",
        "pp",
        "ca",
        "cf",
        "approx",
        "dept",
        "inc",
        "ltd",
        "co",
        "corp",
    ]
)
# what is left of a section when its heading is removed, if nothing but the heading's decoration
_DECORATION = re.compile(r"[\s#=\-*_>|]*")


class Chunker:
    """Packs a document's sections into chunks of at most `chunk_size` tokens, with overlap."""

    def __init__(self, tokenizer: Tokenizer, chunk_size: int, overlap: int = 0) -> None:
        if chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be at least 1, got {chunk_size}", hint="set KAG_CHUNK_SIZE")
        if not 0 <= overlap < chunk_size:
            raise ConfigurationError(
                f"chunk overlap ({overlap}) must be at least 0 and smaller than chunk_size ({chunk_size})",
                hint="set KAG_CHUNK_OVERLAP below KAG_CHUNK_SIZE",
            )
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.overlap = overlap

    def chunk(self, doc: ParsedDocument) -> list[ChunkDraft]:
        """Chunks in document order; `doc.text[c.char_start:c.char_end] == c.text` for each."""
        text = doc.text
        pages = sorted(doc.pages, key=lambda p: p.start)
        page_starts = [p.start for p in pages]
        drafts: list[ChunkDraft] = []
        for start, end, path in _sections(doc):
            for char_start, char_end, tokens in self._chunk_section(text, start, end):
                at = bisect_right(page_starts, char_start) - 1
                drafts.append(
                    ChunkDraft(
                        ordinal=len(drafts),
                        text=text[char_start:char_end],
                        char_start=char_start,
                        char_end=char_end,
                        token_count=tokens,
                        page=pages[at].number if at >= 0 else None,
                        heading_path=path,
                    )
                )
        return drafts

    def _chunk_section(self, text: str, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(char_start, char_end, token_count) of each chunk of `text[start:end]`."""
        section = text[start:end]
        # one tokenizer call per section; every cut below is a lookup in these spans
        spans = self.tokenizer.token_spans(section)
        if not spans:
            return
        plan = _CutPlan(section, spans)
        size, n = self.chunk_size, len(spans)
        first, floor = 0, 0
        while True:
            limit = first + size
            last = n if limit >= n else plan.cut(first, max(first, floor), limit)
            char_start, char_end = start + spans[first][0], start + spans[last - 1][1]
            # trim by moving offsets, never by editing text
            while char_start < char_end and text[char_start].isspace():
                char_start += 1
            while char_end > char_start and text[char_end - 1].isspace():
                char_end -= 1
            if char_end > char_start:
                yield char_start, char_end, last - first
            if last >= n:
                return
            first, floor = plan.overlap_start(first, last, self.overlap), last


class _CutPlan:
    """Candidate cut points of one section as token indices (cut before token i), by strength."""

    def __init__(self, section: str, spans: list[Span]) -> None:
        self.section = section
        self.spans = spans
        starts = [s for s, _ in spans]
        n = len(spans)

        def indices(positions: Iterator[int]) -> set[int]:
            found = set()
            for pos in positions:
                i = bisect_left(starts, pos)
                if 0 < i < n:
                    found.add(i)
            return found

        paragraphs = indices(m.end() for m in _PARAGRAPH.finditer(section))
        sentences = paragraphs | indices(m.end() for m in _SENTENCE.finditer(section) if _ends_sentence(section, m))
        lines = sentences | indices(m.end() for m in _LINE.finditer(section))
        # each level includes the stronger ones, so "the last cut of level L" is one bisect
        self.levels = [sorted(paragraphs), sorted(sentences), sorted(lines)]
        self.sentences = self.levels[1]

    def cut(self, first: int, floor: int, limit: int) -> int:
        """The end (exclusive token index) of the chunk starting at `first`, in (floor, limit]."""
        # a chunk at least half full that ends at the strongest boundary available
        half = max(floor + 1, first + max(1, (limit - first) // 2))
        for level in self.levels:
            found = _last_in(level, half, limit)
            if found is not None:
                return found
        # else a shorter chunk that still ends at a sentence or line, not inside a word
        for level in self.levels[1:]:
            found = _last_in(level, floor + 1, half - 1)
            if found is not None:
                return found
        # a sentence longer than the budget: hard cut, between words when there are any
        for strict in (True, False):
            for i in range(limit, floor, -1):
                if self._between_words(i, strict=strict):
                    return i
        return limit

    def overlap_start(self, first: int, last: int, overlap: int) -> int:
        """Where the next chunk starts: `overlap` tokens back from `last`, snapped to a sentence or word."""
        target = last - overlap
        if overlap == 0 or target <= first:
            return last  # no overlap, or a chunk so short that the overlap would repeat all of it
        found = _first_in(self.sentences, target, last - 1)
        if found is not None:
            return found
        for strict in (True, False):
            for i in range(target, last):
                if self._between_words(i, strict=strict):
                    return i
        return target

    def _between_words(self, i: int, *, strict: bool) -> bool:
        """Whether a cut before token i falls at whitespace (strict) or at least not inside a word."""
        prev_end, start = self.spans[i - 1][1], self.spans[i][0]
        if start > prev_end:
            return True
        # punctuation next to a letter ("e.g", "3.5") still re-tokenizes the same on both sides
        return not strict and not (self.section[start - 1].isalnum() and self.section[start].isalnum())


def _ends_sentence(section: str, match: re.Match[str]) -> bool:
    """Reject sentence ends before a lowercase word ("e.g. this") or after an abbreviation or initial."""
    end = match.end()
    if end < len(section) and section[end].islower():
        return False
    if not match.group().startswith("."):
        return True
    word = _LAST_WORD.search(section, max(0, match.start() - 12), match.start() + 1)
    if word is None:
        return True
    token = word.group(1)
    return not ((len(token) == 1 and token.isupper()) or token.lower() in _ABBREVIATIONS)


def _last_in(sorted_indices: list[int], lo: int, hi: int) -> int | None:
    """The largest index in [lo, hi], or None."""
    if lo > hi:
        return None
    at = bisect_right(sorted_indices, hi) - 1
    return sorted_indices[at] if at >= 0 and sorted_indices[at] >= lo else None


def _first_in(sorted_indices: list[int], lo: int, hi: int) -> int | None:
    """The smallest index in [lo, hi], or None."""
    at = bisect_left(sorted_indices, lo)
    return sorted_indices[at] if at < len(sorted_indices) and sorted_indices[at] <= hi else None


def _sections(doc: ParsedDocument) -> Iterator[tuple[int, int, tuple[str, ...]]]:
    """(start, end, heading path) of each section; a heading's section starts at its line."""
    text = doc.text
    headings = sorted((h for h in doc.headings if 0 <= h.start < h.end <= len(text)), key=lambda h: h.start)
    stack: list[HeadingSpan] = []
    start = 0
    path: tuple[str, ...] = ()
    pending: list[HeadingSpan] = []  # headings inside the section being built
    for heading in headings:
        # the heading's line, so a markdown "## " stays with its title, not the previous section
        line_start = max(start, text.rfind("\n", 0, heading.start) + 1)
        # a section holding nothing but headings joins the next one ("# Title" over "## Intro")
        if line_start > start and not _headings_only(text, start, line_start, pending):
            yield start, line_start, path
            start, pending = line_start, []
        pending.append(heading)
        while stack and stack[-1].level >= heading.level:
            stack.pop()
        stack.append(heading)
        path = tuple(" ".join(h.title.split()) for h in stack)
    yield start, len(text), path


def _headings_only(text: str, start: int, end: int, headings: list[HeadingSpan]) -> bool:
    """Whether text[start:end] is nothing but these headings and their markup."""
    if not headings:
        return False
    rest, at = [], start
    for heading in headings:
        rest.append(text[at : heading.start])
        at = max(at, heading.end)
    rest.append(text[at:end])
    return _DECORATION.fullmatch("".join(rest)) is not None
