"""PPTX loader: slide N is page N; its title is a heading, then its text boxes, tables and notes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from ingest.loaders.archive import check_zip
from ingest.loaders.base import LoaderLimits, TextAssembler, clean_title, normalize_newlines, require_text
from kag.errors import CorruptDocumentError
from kag.records import PageSpan, ParsedDocument


class PptxLoader:
    """`.pptx`: python-pptx; shapes in the slide's order (groups flattened), speaker notes last."""

    mime_type = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

    def __init__(self, *, limits: LoaderLimits | None = None) -> None:
        self.limits = limits or LoaderLimits()

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        check_zip(data, source, self.limits, kind=".pptx")
        presentation = _open(data, source)
        out = TextAssembler(max_chars=self.limits.max_text_chars, source=source)
        pages: list[PageSpan] = []
        try:
            for number, slide in enumerate(presentation.slides, start=1):
                start, before = out.next_start(), out.length
                _add_slide(out, slide)
                pages.append(PageSpan(number, start if out.length > before else out.length, out.length))
        except CorruptDocumentError:
            raise
        except Exception as exc:  # python-pptx raises many types on broken slide XML
            raise _corrupt(source, exc) from exc
        require_text(out.text, source, what="no slide has text")
        title = clean_title(_core_title(presentation))
        if title is None and out.headings:
            title = clean_title(out.headings[0].title)
        return ParsedDocument(
            text=out.text,
            mime_type=self.mime_type,
            title=title,
            pages=tuple(pages),
            headings=tuple(out.headings),
            metadata={"slide_count": len(pages)},
        )


def _add_slide(out: TextAssembler, slide: Any) -> None:
    title_shape = slide.shapes.title
    title_id = title_shape.shape_id if title_shape is not None else None
    if title_shape is not None:
        out.add(_clean(title_shape.text_frame.text), heading_level=1)
    for shape in _shapes(slide.shapes):
        if title_id is not None and shape.shape_id == title_id:
            continue
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            out.add(_clean(shape.text_frame.text))
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                cells = [" ".join(_clean(cell.text).split()) for cell in row.cells]
                if any(cells):
                    out.add(" | ".join(cells))
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None:
            out.add(_clean(notes.text))


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape, group members in place of their group."""
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group shape
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _clean(text: str) -> str:
    # python-pptx gives a line break inside a paragraph as a vertical tab
    return normalize_newlines(text).replace("\x0b", "\n").replace("\x00", "")


def _open(data: bytes, source: str) -> Any:
    from pptx import Presentation

    try:
        return Presentation(io.BytesIO(data))
    except Exception as exc:  # bad zips, missing parts and wrong content types alike
        raise _corrupt(source, exc) from exc


def _corrupt(source: str, exc: Exception) -> CorruptDocumentError:
    return CorruptDocumentError(
        f"{source}: not a readable .pptx file ({type(exc).__name__}: {exc})",
        hint="the file may be damaged, or be a legacy .ppt renamed to .pptx; re-save it from PowerPoint as .pptx",
        source=source,
    )


def _core_title(presentation: Any) -> str | None:
    try:
        return presentation.core_properties.title
    except Exception:
        return None
