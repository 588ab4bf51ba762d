"""The loader protocol, the registry that picks a loader per file, and helpers loaders share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePath
from typing import Protocol, runtime_checkable

from kag.errors import EmptyDocumentError, UnsupportedFormatError
from kag.records import HeadingSpan, ParsedDocument

TITLE_MAX_CHARS = 120


@runtime_checkable
class Loader(Protocol):
    """Turns the bytes of one file into plain text plus structure with exact offsets."""

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        """Parse `data` (the whole file); `source` names it in errors."""
        ...


class LoaderRegistry:
    """Maps file extensions and MIME types to loaders; built-ins and plugins register alike."""

    def __init__(self) -> None:
        self._by_extension: dict[str, Loader] = {}
        self._by_mime: dict[str, Loader] = {}
        self._mime_by_extension: dict[str, str] = {}

    def register(self, loader: Loader, *, extensions: Iterable[str], mime_types: Iterable[str]) -> None:
        """Route `extensions` (".pdf" or "pdf") and `mime_types` to `loader`; a later call overrides."""
        if not isinstance(loader, Loader):
            raise TypeError(f"{loader!r} has no load(data, *, source) method")
        mimes = [_normalize_mime(m) for m in mime_types]
        exts = [_normalize_extension(e) for e in extensions]
        if not exts and not mimes:
            raise ValueError("register() needs at least one extension or MIME type")
        for mime in mimes:
            self._by_mime[mime] = loader
        for ext in exts:
            self._by_extension[ext] = loader
            if mimes:
                self._mime_by_extension[ext] = mimes[0]

    def for_path(self, path_or_name: str | PurePath) -> Loader:
        """The loader for a file name, chosen by its extension (case-insensitive)."""
        ext = _extension_of(path_or_name)
        loader = self._by_extension.get(ext)
        if loader is None:
            raise self._unsupported(path_or_name, ext)
        return loader

    def for_mime(self, mime: str) -> Loader:
        """The loader for a MIME type; parameters such as `; charset=utf-8` are ignored."""
        loader = self._by_mime.get(_normalize_mime(mime))
        if loader is None:
            raise UnsupportedFormatError(
                f"no loader for MIME type {mime!r}",
                hint="supported types: " + ", ".join(sorted(self._by_mime)),
                mime_type=mime,
            )
        return loader

    def supported_extensions(self) -> tuple[str, ...]:
        """Registered extensions, sorted, each with its leading dot."""
        return tuple(sorted(self._by_extension))

    def mime_type_for(self, name: str | PurePath) -> str:
        """The MIME type registered for a file name's extension."""
        ext = _extension_of(name)
        mime = self._mime_by_extension.get(ext)
        if mime is None:
            raise self._unsupported(name, ext)
        return mime

    def _unsupported(self, name: str | PurePath, ext: str) -> UnsupportedFormatError:
        shown = repr(ext) if ext else "no extension"
        return UnsupportedFormatError(
            f"{name}: unsupported file type ({shown})",
            hint="supported extensions: " + ", ".join(self.supported_extensions()),
            source=str(name),
        )


def default_registry(*, json_text_field: str = "text", json_title_field: str = "title") -> LoaderRegistry:
    """A registry with every built-in loader, registered through the public `register` path."""
    # imported here so that `import ingest.loaders.base` stays cheap for plugin authors
    from ingest.loaders.docx import DocxLoader
    from ingest.loaders.html import HtmlLoader
    from ingest.loaders.jsonl import JsonLinesLoader, JsonLoader
    from ingest.loaders.markdown import MarkdownLoader
    from ingest.loaders.pdf import PdfLoader
    from ingest.loaders.text import TextLoader

    registry = LoaderRegistry()
    registry.register(TextLoader(), extensions=[".txt", ".text"], mime_types=["text/plain"])
    registry.register(
        MarkdownLoader(), extensions=[".md", ".markdown"], mime_types=["text/markdown", "text/x-markdown"]
    )
    registry.register(HtmlLoader(), extensions=[".html", ".htm"], mime_types=["text/html", "application/xhtml+xml"])
    registry.register(PdfLoader(), extensions=[".pdf"], mime_types=["application/pdf"])
    registry.register(
        DocxLoader(),
        extensions=[".docx"],
        mime_types=["application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
    )
    registry.register(
        JsonLoader(text_field=json_text_field, title_field=json_title_field),
        extensions=[".json"],
        mime_types=["application/json"],
    )
    registry.register(
        JsonLinesLoader(text_field=json_text_field, title_field=json_title_field),
        extensions=[".jsonl", ".ndjson"],
        mime_types=["application/jsonl", "application/x-ndjson", "application/x-jsonlines"],
    )
    return registry


def _normalize_extension(ext: str) -> str:
    ext = ext.strip().lower()
    return ext if ext.startswith(".") else "." + ext


def _normalize_mime(mime: str) -> str:
    return mime.split(";", 1)[0].strip().lower()


def _extension_of(name: str | PurePath) -> str:
    return PurePath(name).suffix.lower()


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


class TextAssembler:
    """Builds a document's text block by block, recording heading offsets into the result."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.headings: list[HeadingSpan] = []

    def add(self, block: str, *, heading_level: int | None = None, verbatim: bool = False) -> None:
        """Append a stripped block after a blank line; `verbatim` keeps indentation (for `<pre>`)."""
        block = block.strip("\n").rstrip() if verbatim else block.strip()
        if not block:
            return
        if self._parts:
            self._parts.append("\n\n")
            self._length += 2
        if heading_level is not None:
            self.headings.append(HeadingSpan(heading_level, block, self._length, self._length + len(block)))
        self._parts.append(block)
        self._length += len(block)

    @property
    def text(self) -> str:
        return "".join(self._parts)
