"""The registry that picks a loader per file, and the default one holding every built-in loader.

It sits beside the loaders, not in base.py: the loaders import base.py's helpers, so base.py importing
them back made an import circle."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

from ingest.loaders.base import Loader, LoaderLimits
from ingest.loaders.csv import CsvLoader
from ingest.loaders.docx import DocxLoader
from ingest.loaders.eml import EmlLoader
from ingest.loaders.html import HtmlLoader
from ingest.loaders.jsonl import JsonLinesLoader, JsonLoader
from ingest.loaders.markdown import MarkdownLoader
from ingest.loaders.pdf import PdfLoader
from ingest.loaders.pptx import PptxLoader
from ingest.loaders.text import TextLoader
from ingest.loaders.xlsx import XlsxLoader
from kag.errors import UnsupportedFormatError


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


def default_registry(
    *,
    json_text_field: str = "text",
    json_title_field: str = "title",
    limits: LoaderLimits | None = None,
    ocr: str = "off",
    tesseract_cmd: str = "tesseract",
    ocr_language: str = "eng",
) -> LoaderRegistry:
    """A registry with every built-in loader, registered through the public `register` path."""
    limits = limits or LoaderLimits()
    registry = LoaderRegistry()
    registry.register(TextLoader(), extensions=[".txt", ".text"], mime_types=["text/plain"])
    registry.register(
        MarkdownLoader(), extensions=[".md", ".markdown"], mime_types=["text/markdown", "text/x-markdown"]
    )
    registry.register(HtmlLoader(), extensions=[".html", ".htm"], mime_types=["text/html", "application/xhtml+xml"])
    registry.register(
        PdfLoader(ocr=ocr, tesseract_cmd=tesseract_cmd, ocr_language=ocr_language),
        extensions=[".pdf"],
        mime_types=["application/pdf"],
    )
    registry.register(
        DocxLoader(limits=limits),
        extensions=[".docx"],
        mime_types=["application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
    )
    registry.register(
        XlsxLoader(limits=limits),
        extensions=[".xlsx", ".xlsm"],
        mime_types=[
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.ms-excel.sheet.macroEnabled.12",
        ],
    )
    registry.register(
        PptxLoader(limits=limits),
        extensions=[".pptx"],
        mime_types=["application/vnd.openxmlformats-officedocument.presentationml.presentation"],
    )
    registry.register(
        CsvLoader(limits=limits), extensions=[".csv", ".tsv"], mime_types=["text/csv", "text/tab-separated-values"]
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
    # attachments are parsed by the loaders registered here, itself included (a forwarded message)
    registry.register(EmlLoader(registry, limits=limits), extensions=[".eml"], mime_types=["message/rfc822"])
    return registry


def _normalize_extension(ext: str) -> str:
    ext = ext.strip().lower()
    return ext if ext.startswith(".") else "." + ext


def _normalize_mime(mime: str) -> str:
    return mime.split(";", 1)[0].strip().lower()


def _extension_of(name: str | PurePath) -> str:
    return PurePath(name).suffix.lower()
