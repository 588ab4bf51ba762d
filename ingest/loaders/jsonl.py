"""JSON and JSON Lines loaders: each record's text field becomes a section headed by its title."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ingest.loaders.base import TextAssembler, clean_title, normalize_newlines
from ingest.loaders.text import decode_text
from kag.errors import CorruptDocumentError, EmptyDocumentError
from kag.records import ParsedDocument


class JsonLoader:
    """`.json`: one object or a list of objects."""

    mime_type = "application/json"

    def __init__(self, *, text_field: str = "text", title_field: str = "title") -> None:
        if not text_field:
            raise ValueError("text_field must not be empty")
        self.text_field = text_field
        self.title_field = title_field

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        raw = decode_text(data, source)
        if not raw.strip():
            raise EmptyDocumentError(f"{source}: the file is empty", source=source)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _malformed(source, exc.lineno, f"column {exc.colno}: {exc.msg}") from exc
        if isinstance(value, dict):
            records: list[Any] = [value]
        elif isinstance(value, list):
            records = value
        else:
            raise CorruptDocumentError(
                f"{source}: the top level is a {type(value).__name__}, not an object or a list of objects",
                hint="use {...}, [{...}, ...], or one object per line in a .jsonl file",
                source=source,
            )
        for index, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                raise CorruptDocumentError(
                    f"{source}: item {index} of the top-level list is a {type(record).__name__}, not an object",
                    hint="every item must be an object with a text field",
                    source=source,
                )
        return _assemble(records, self, source)


class JsonLinesLoader(JsonLoader):
    """`.jsonl`: one object per line; blank lines are ignored."""

    mime_type = "application/jsonl"

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        raw = decode_text(data, source)
        records: list[Mapping[str, Any]] = []
        for number, line in enumerate(raw.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _malformed(source, number, f"column {exc.colno}: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise _malformed(source, number, f"a {type(record).__name__}, not an object")
            records.append(record)
        return _assemble(records, self, source)


def _assemble(records: Iterable[Mapping[str, Any]], loader: JsonLoader, source: str) -> ParsedDocument:
    """Heading line plus text per record, records separated by blank lines."""
    out = TextAssembler()
    total = used = 0
    title: str | None = None
    for record in records:
        total += 1
        body = record.get(loader.text_field)
        if not isinstance(body, str) or not body.strip():
            continue  # e.g. metadata rows in an export; counted in `skipped_records`
        used += 1
        heading = _heading(record, loader.title_field)
        if used == 1 and record.get(loader.title_field) is not None:
            title = clean_title(heading)
        out.add(heading or f"record {total}", heading_level=1)
        out.add(normalize_newlines(body).replace("\x00", ""))
    if used == 0:
        found = f"none of its {total} record(s) has" if total else "it has no records, so none has"
        raise EmptyDocumentError(
            f"{source}: {found} a non-empty string field {loader.text_field!r}",
            hint="set KAG_JSON_TEXT_FIELD to the field that holds the text",
            source=source,
        )
    return ParsedDocument(
        text=out.text,
        mime_type=loader.mime_type,
        # one record's title names the file; many records are many documents' worth of titles
        title=title if used == 1 else None,
        headings=tuple(out.headings),
        metadata={"records": used, "skipped_records": total - used},
    )


def _heading(record: Mapping[str, Any], title_field: str) -> str:
    for key in (title_field, "_id", "id"):
        value = record.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = " ".join(str(value).split())
            if text:
                return text
    return ""


def _malformed(source: str, line: int, detail: str) -> CorruptDocumentError:
    return CorruptDocumentError(
        f"{source}: malformed JSON on line {line}, {detail}",
        hint="fix the JSON there (a .jsonl file holds exactly one object per line)",
        source=source,
        line=line,
    )
