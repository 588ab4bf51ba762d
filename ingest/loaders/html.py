"""HTML loader: main content as plain text built block by block, headings with exact offsets."""

from __future__ import annotations

import codecs
import re
from typing import Any

from ingest.loaders.base import (
    TextAssembler,
    clean_title,
    first_line_title,
    normalize_newlines,
    require_text,
)
from kag.errors import DecodeError
from kag.records import ParsedDocument

_DROP = "script, style, noscript, template, nav, header, footer, aside"
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "form",
        "hr",
        "html",
        "legend",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
    ]
) | frozenset(_HEADINGS)
_CELLS = frozenset({"td", "th"})
# markers that survive whitespace collapsing: a <br> and a table-cell boundary
_BR, _CELL = "\x02", "\x01"
_SPACES = re.compile(r"[^\S\x01\x02]+")
_CELL_SEP = re.compile(r" ?\x01 ?")
_BR_SEP = re.compile(r" ?\x02 ?")
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class HtmlLoader:
    """`.html`: text of `<main>`/`<article>` (else `<body>`) minus navigation and scripts."""

    mime_type = "text/html"

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        from selectolax.lexbor import LexborHTMLParser

        tree = LexborHTMLParser(_decode(data, source))
        title_node = tree.css_first("title")
        title = clean_title(title_node.text()) if title_node is not None else None
        for node in tree.css(_DROP):
            node.decompose()
        root = tree.css_first("main") or tree.css_first("article") or tree.body or tree.root
        assembler = TextAssembler()
        if root is not None:
            _Walker(assembler).walk(root)
        text = assembler.text
        require_text(text, source, what="the page has no visible text")
        if title is None:
            title = next((clean_title(h.title) for h in assembler.headings if h.level == 1), None)
        return ParsedDocument(
            text=text,
            mime_type=self.mime_type,
            title=title or first_line_title(text),
            headings=tuple(assembler.headings),
        )


def _decode(data: bytes, source: str) -> str:
    """Decode by BOM, else by `<meta charset>`, else as UTF-8."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if encoding is None:
        match = _META_CHARSET.search(data, 0, 4096)
        encoding = "utf-8"
        if match:
            try:
                encoding = codecs.lookup(match.group(1).decode("ascii")).name
            except LookupError:
                pass  # an unknown label: browsers fall back too
    try:
        return normalize_newlines(data.decode(encoding))
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"{source}: not valid {encoding} (byte {exc.start}: {exc.reason})",
            hint="declare the page's encoding with <meta charset=...> or re-save it as UTF-8",
            source=source,
        ) from exc


class _Walker:
    """Walks the DOM without recursion, flushing one text block per block-level element."""

    def __init__(self, assembler: TextAssembler) -> None:
        self.out = assembler
        self.buffer: list[str] = []
        self.pre_depth = 0
        self.heading_level: int | None = None

    def walk(self, root: Any) -> None:
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            tag = node.tag
            if leaving:
                self._leave(tag)
                continue
            if tag == "-text":
                self.buffer.append(node.text(deep=False) or "")
                continue
            if tag == "br":
                self.buffer.append(_BR)
                continue
            if tag.startswith("-"):  # comments, doctype
                continue
            self._enter(tag)
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(list(node.iter(include_text=True))))
        self._flush()

    def _enter(self, tag: str) -> None:
        if tag in _CELLS:
            self.buffer.append(_CELL)
        elif tag in _BLOCKS:
            self._flush()
            if tag in _HEADINGS:
                self.heading_level = _HEADINGS[tag]
            elif tag == "pre":
                self.pre_depth += 1

    def _leave(self, tag: str) -> None:
        if tag in _BLOCKS:
            self._flush()
            if tag in _HEADINGS:
                self.heading_level = None
            elif tag == "pre":
                self.pre_depth -= 1

    def _flush(self) -> None:
        raw = "".join(self.buffer)
        self.buffer.clear()
        if self.pre_depth:
            block = raw.replace(_CELL, " | ").replace(_BR, "\n")
            self.out.add(block, verbatim=True)
            return
        block = _SPACES.sub(" ", raw).strip(" " + _CELL)
        block = _BR_SEP.sub("\n", _CELL_SEP.sub(" | ", block))
        self.out.add(block, heading_level=self.heading_level)
