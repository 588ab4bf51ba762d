"""Markdown loader: the source is the text; headings come from markdown-it's parse."""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

from ingest.loaders.base import clean_title, first_line_title, require_text
from ingest.loaders.text import detect_text
from kag.errors import DocumentError
from kag.ontology import document_evidence
from kag.records import HeadingSpan, ParsedDocument

# YAML front matter: markdown-it would read its closing `---` as a setext underline
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(?:.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
# front-matter keys that grade the document's relations (see kag.ontology)
_FRONT_MATTER_EVIDENCE = re.compile(r"^(source_kind|reproducible|evidence_grade):[ \t]*(.+?)[ \t]*$", re.MULTILINE)


class MarkdownLoader:
    """`.md`: text = the markdown source; ATX and setext headings with offsets of their titles."""

    mime_type = "text/markdown"

    def __init__(self) -> None:
        self._parser: Any = None  # built on first use, so importing the module stays cheap

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        decoded = detect_text(data, source)
        text = decoded.text
        require_text(text, source, what="the file is empty or whitespace only")
        front = _FRONT_MATTER.match(text)
        body_start = front.end() if front else 0
        headings = tuple(h for h in self._headings(text) if h.start >= body_start)
        title = _front_matter_title(front.group(0)) if front else None
        if title is None:
            # the first H1, else the first heading, else the first line
            ranked = sorted(headings, key=lambda h: h.level != 1)
            title = clean_title(ranked[0].title) if ranked else first_line_title(text[body_start:])
        metadata: dict[str, Any] = {"encoding": decoded.encoding}
        if front:
            metadata.update(_front_matter_evidence(front.group(0), source))
        return ParsedDocument(
            text=text,
            mime_type=self.mime_type,
            title=title,
            headings=headings,
            metadata=metadata,
        )

    def _headings(self, text: str) -> list[HeadingSpan]:
        if self._parser is None:
            from markdown_it import MarkdownIt

            self._parser = MarkdownIt("commonmark")
        tokens = self._parser.parse(text)
        lines = text.split("\n")
        # offset of the first character of each line
        line_starts = [0, *accumulate(len(line) + 1 for line in lines)]
        headings: list[HeadingSpan] = []
        for i, token in enumerate(tokens):
            if token.type != "heading_open" or token.map is None or i + 1 >= len(tokens):
                continue
            content = tokens[i + 1].content
            if not content.strip():
                continue
            first, last = token.map
            if token.markup in ("=", "-"):
                last -= 1  # a setext heading's last line is its underline
            span = _locate(text, content, line_starts[first], line_starts[min(last, len(lines))])
            if span is not None:
                start, end = span
                headings.append(HeadingSpan(int(token.tag[1:]), text[start:end], start, end))
        return headings


def _locate(text: str, content: str, lo: int, hi: int) -> tuple[int, int] | None:
    """Where the heading's content sits in the source lines [lo, hi); stripped first line if unmatched."""
    at = text.find(content, lo, hi)
    if at >= 0:
        return at, at + len(content)
    # content differs from the source when continuation lines were de-indented
    first_line = content.split("\n", 1)[0].strip()
    at = text.find(first_line, lo, hi) if first_line else -1
    return (at, at + len(first_line)) if at >= 0 else None


def _front_matter_evidence(front: str, source: str) -> dict[str, str]:
    """source_kind, reproducible and evidence_grade from the front matter; a bad value names the file."""
    found = {m.group(1): m.group(2).strip("\"'") for m in _FRONT_MATTER_EVIDENCE.finditer(front)}
    try:
        document_evidence(found)
    except DocumentError as exc:
        raise DocumentError(f"{source}: {exc.message}", hint=exc.hint, source=source) from None
    return found


def _front_matter_title(front: str) -> str | None:
    match = _FRONT_MATTER_TITLE.search(front)
    return clean_title(match.group(1).strip("\"'")) if match else None
