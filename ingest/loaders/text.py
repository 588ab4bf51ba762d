"""Plain-text loader: UTF-8 (with or without BOM) or UTF-16 with BOM."""

from __future__ import annotations

import codecs

from ingest.loaders.base import first_line_title, normalize_newlines, require_text
from kag.errors import DecodeError
from kag.records import ParsedDocument

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes, source: str) -> str:
    """Decode by BOM, else strict UTF-8; NUL characters mean binary or BOM-less UTF-16."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"{source}: not valid {encoding} text (byte {exc.start}: {exc.reason})",
            hint="re-save the file as UTF-8",
            source=source,
        ) from exc
    if "\x00" in text:
        # NULs are never real text, and PostgreSQL cannot store them
        raise DecodeError(
            f"{source}: contains NUL characters, so it is binary or UTF-16 without a byte-order mark",
            hint="re-save the file as UTF-8",
            source=source,
        )
    return normalize_newlines(text)


class TextLoader:
    """`.txt`: the decoded text as is; title = its first non-empty line."""

    mime_type = "text/plain"

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        text = decode_text(data, source)
        require_text(text, source, what="the file is empty or whitespace only")
        return ParsedDocument(text=text, mime_type=self.mime_type, title=first_line_title(text))
