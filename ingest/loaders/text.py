"""Plain-text loader: UTF-8 or UTF-16 by byte-order mark, else UTF-8, else the encoding detected."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from ingest.loaders.base import first_line_title, normalize_newlines, require_text
from kag.errors import DecodeError
from kag.records import ParsedDocument

#: the encoding preferred among equally likely ones
WESTERN = "cp1252"
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True, slots=True)
class DecodedText:
    """A file's text with newlines normalized, and the encoding it was read in."""

    text: str
    encoding: str


def decode_text(data: bytes, source: str) -> str:
    """The text of `data` (see `detect_text`)."""
    return detect_text(data, source).text


def detect_text(data: bytes, source: str) -> DecodedText:
    """Decode by BOM, else as strict UTF-8, else in the encoding charset-normalizer finds.

    NUL bytes without a BOM mean binary or BOM-less UTF-16, which no detector tells apart from
    noise reliably, so they are refused before any guessing."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if encoding is None and b"\x00" in data:
        # NULs are never real text, and PostgreSQL cannot store them
        raise _binary(source, "contains NUL bytes, so it is binary or UTF-16 without a byte-order mark")
    if encoding is not None:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"{source}: not valid {encoding} text (byte {exc.start}: {exc.reason})",
                hint="re-save the file as UTF-8",
                source=source,
            ) from exc
    else:
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = _detect(data, source)
    if "\x00" in text:
        raise _binary(source, "contains NUL characters, so it is binary")
    return DecodedText(normalize_newlines(text), encoding)


def _detect(data: bytes, source: str) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise _binary(source, "is not valid UTF-8 and reads as text in no other encoding, so it is binary")
    # on short Western text many code pages tie and the detector takes the first by name (often cp1250,
    # turning "crème" into "crčme"); among the tied, read as cp1252 when it fits, as browsers read
    # Latin-1 (cp1252 is its superset)
    for match in matches:
        tied = match.chaos == best.chaos and match.coherence == best.coherence
        if tied and WESTERN in match.could_be_from_charset:
            return data.decode(WESTERN), WESTERN
    return str(best), best.encoding


def _binary(source: str, what: str) -> DecodeError:
    return DecodeError(
        f"{source}: {what}",
        hint="only text files can be ingested under this extension; re-save it as UTF-8 text",
        source=source,
    )


class TextLoader:
    """`.txt`: the decoded text as is; title = its first non-empty line; the encoding in metadata."""

    mime_type = "text/plain"

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        decoded = detect_text(data, source)
        text = decoded.text
        require_text(text, source, what="the file is empty or whitespace only")
        return ParsedDocument(
            text=text, mime_type=self.mime_type, title=first_line_title(text), metadata={"encoding": decoded.encoding}
        )
