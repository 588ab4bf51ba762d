"""CSV loader: each row becomes a record headed `row N`, fields named by the header row when there is one."""

from __future__ import annotations

import csv
import io

from ingest.loaders.base import LoaderLimits, TextAssembler, require_text
from ingest.loaders.records import add_record, cell_text, is_header, record_text
from ingest.loaders.text import detect_text
from kag.errors import CorruptDocumentError
from kag.records import ParsedDocument

_SNIFF_CHARS = 64 * 1024
_DELIMITERS = ",;\t|"


class CsvLoader:
    """`.csv`/`.tsv`: dialect sniffed by the stdlib; row N of the file is the section `row N`."""

    mime_type = "text/csv"

    def __init__(self, *, limits: LoaderLimits | None = None) -> None:
        self.limits = limits or LoaderLimits()

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        decoded = detect_text(data, source)
        text = decoded.text
        require_text(text, source, what="the file is empty or whitespace only")
        dialect = _dialect(text[:_SNIFF_CHARS], tab=source.lower().endswith(".tsv"))
        out = TextAssembler(max_chars=self.limits.max_text_chars, source=source)
        reader = csv.reader(io.StringIO(text), dialect)
        header: list[str] | None = None
        rows = 0
        try:
            for number, raw in enumerate(reader, start=1):
                cells = [cell_text(c) for c in raw]
                if not any(cells):
                    continue
                if rows == 0 and header is None and number == 1 and is_header(cells):
                    header = cells
                    continue
                add_record(out, number, record_text(cells, header), level=1)
                rows += 1
        except csv.Error as exc:
            raise CorruptDocumentError(
                f"{source}: malformed CSV near line {reader.line_num}: {exc}",
                hint="fix the quoting there, or re-export the file as CSV",
                source=source,
                line=reader.line_num,
            ) from exc
        if rows == 0 and header is not None:
            # a header and nothing else: the names are still the only text there is
            add_record(out, 1, " | ".join(c for c in header if c), level=1)
            header = None
        require_text(out.text, source, what="the table has no cell with text")
        return ParsedDocument(
            text=out.text,
            mime_type=self.mime_type,
            headings=tuple(out.headings),
            metadata={
                "encoding": decoded.encoding,
                "rows": rows,
                "columns": header or [],
                "delimiter": dialect.delimiter,
            },
        )


def _dialect(sample: str, *, tab: bool) -> type[csv.Dialect] | csv.Dialect:
    """The sniffed dialect; the file's default (comma, or tab for `.tsv`) when sniffing fails."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS)
    except csv.Error:
        return csv.excel_tab if tab else csv.excel
