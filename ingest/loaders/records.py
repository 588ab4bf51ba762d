"""Helpers the table loaders (.csv, .xlsx) share: one row becomes one titled record."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ingest.loaders.base import TextAssembler, normalize_newlines


def cell_text(value: object) -> str:
    """A cell as text: integral floats without `.0`, dates in ISO form, whitespace collapsed per line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, (dt.datetime, dt.date, dt.time)):
        text = value.isoformat()
    else:
        text = str(value)
    lines = normalize_newlines(text).replace("\x00", "").split("\n")
    return "\n".join(" ".join(line.split()) for line in lines).strip()


def is_header(cells: Sequence[object]) -> bool:
    """Whether a first row looks like column names: every filled cell is a string with a letter."""
    filled = [c for c in cells if c not in (None, "")]
    return bool(filled) and all(isinstance(c, str) and any(ch.isalpha() for ch in c) for c in filled)


def record_text(cells: Sequence[str], header: Sequence[str] | None) -> str:
    """`name: value` lines under a header (unnamed columns are `column N`), else cells joined by ` | `."""
    if header is None:
        return " | ".join(c for c in cells if c)
    lines = []
    for index, cell in enumerate(cells):
        if cell:
            name = header[index] if index < len(header) and header[index] else f"column {index + 1}"
            lines.append(f"{name}: {cell}")
    return "\n".join(lines)


def add_record(out: TextAssembler, row_number: int, text: str, *, level: int) -> None:
    """A `row N` heading (so every chunk of the row carries it in its heading path), then the row."""
    out.add(f"row {row_number}", heading_level=level)
    out.add(text)
