"""The loader protocol and the helpers loaders share; it imports no concrete loader (see registry.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from kag.errors import EmptyDocumentError, FileTooLargeError
from kag.records import HeadingSpan, ParsedDocument
from kag.units import MB

TITLE_MAX_CHARS = 120


@dataclass(frozen=True, slots=True)
class LoaderLimits:
    """Bounds on what one file may expand to while parsing, so a small file cannot exhaust memory."""

    #: sum of the uncompressed sizes of a zip-based file's entries (.docx, .xlsx, .pptx)
    max_uncompressed_bytes: int = 100 * MB
    #: entries in one zip-based file
    max_zip_entries: int = 10_000
    #: uncompressed / compressed size of one entry (checked on entries over 1 MB uncompressed)
    max_zip_ratio: float = 100.0
    #: characters of text one file may yield
    max_text_chars: int = 20_000_000


@runtime_checkable
class Loader(Protocol):
    """Turns the bytes of one file into plain text plus structure with exact offsets."""

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        """Parse `data` (the whole file); `source` names it in errors."""
        ...


# --- helpers shared by the built-in loaders ---------------------------------------------

_NEWLINES = re.compile(r"\r\n?")


def normalize_newlines(text: str) -> str:
    """`\\r\\n` and lone `\\r` become `\\n`, so offsets mean the same on every platform."""
    return _NEWLINES.sub("\n", text)


def first_line_title(text: str) -> str | None:
    """The first non-empty line, trimmed to TITLE_MAX_CHARS, or None."""
    for line in text.split("\n", 50):
        line = line.strip()
        if line:
            return _trim_title(line)
    return None


def _trim_title(title: str) -> str:
    title = " ".join(title.split())
    return title if len(title) <= TITLE_MAX_CHARS else title[: TITLE_MAX_CHARS - 1].rstrip() + "…"


def clean_title(title: object) -> str | None:
    """A title from metadata, whitespace-collapsed and trimmed, or None when blank."""
    if not isinstance(title, str) or not title.strip():
        return None
    return _trim_title(title)


def require_text(text: str, source: str, *, what: str = "no text", hint: str | None = None) -> None:
    """Raise EmptyDocumentError when `text` is blank."""
    if not text.strip():
        raise EmptyDocumentError(
            f"{source}: {what}", hint=hint or "nothing to index; check the file's content", source=source
        )


def text_too_long(source: str, chars: int, limit: int) -> FileTooLargeError:
    """The error for a file whose text passes `limit` characters (KAG_MAX_DOCUMENT_CHARS)."""
    return FileTooLargeError(
        f"{source}: its text is over the limit of {limit:,} characters"
        + (f" ({chars:,} found)" if chars > limit else ""),
        hint="split the file, or raise KAG_MAX_DOCUMENT_CHARS",
        source=source,
    )


def check_text_length(text: str, source: str, limit: int | None) -> None:
    """Raise FileTooLargeError when `text` is longer than `limit` characters (None: no limit)."""
    if limit is not None and len(text) > limit:
        raise text_too_long(source, len(text), limit)


class TextAssembler:
    """Builds a document's text block by block, recording heading offsets into the result.

    With `max_chars` it refuses (FileTooLargeError naming `source`) as soon as the text would pass the
    limit, so a loader stops reading a huge file early instead of building all of it first."""

    def __init__(self, *, max_chars: int | None = None, source: str = "") -> None:
        self._parts: list[str] = []
        self._length = 0
        self.headings: list[HeadingSpan] = []
        self._max_chars = max_chars
        self._source = source

    def add(self, block: str, *, heading_level: int | None = None, verbatim: bool = False) -> None:
        """Append a stripped block after a blank line; `verbatim` keeps indentation (for `<pre>`)."""
        block = block.strip("\n").rstrip() if verbatim else block.strip()
        if not block:
            return
        separator = "\n\n" if self._parts else ""
        if self._max_chars is not None and self._length + len(separator) + len(block) > self._max_chars:
            raise text_too_long(self._source, 0, self._max_chars)
        if separator:
            self._parts.append(separator)
            self._length += len(separator)
        if heading_level is not None:
            self.headings.append(HeadingSpan(heading_level, block, self._length, self._length + len(block)))
        self._parts.append(block)
        self._length += len(block)

    def add_document(self, text: str, headings: Iterable[HeadingSpan], *, level_shift: int = 0) -> tuple[int, int]:
        """Append another document's text as one block, its headings kept (levels shifted); its (start, end)."""
        block = text.strip()
        if not block:
            return self._length, self._length
        lead = len(text) - len(text.lstrip())
        start = self.next_start()
        self.add(block, verbatim=True)
        for h in headings:
            if lead <= h.start and h.end <= lead + len(block):
                shift = start - lead
                self.headings.append(HeadingSpan(h.level + level_shift, h.title, h.start + shift, h.end + shift))
        return start, self._length

    @property
    def length(self) -> int:
        """Characters assembled so far."""
        return self._length

    def next_start(self) -> int:
        """Where the next block added would start (after its blank-line separator)."""
        return self._length + 2 if self._parts else self._length

    @property
    def text(self) -> str:
        return "".join(self._parts)
