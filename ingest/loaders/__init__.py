"""Loaders turn one file's bytes into a ParsedDocument; the registry picks one per file.

`LoaderRegistry` and `default_registry` load on first use (PEP 562), so importing a loader module or
`ingest.loaders.base` does not import every built-in loader."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ingest.loaders.base import Loader, LoaderLimits

if TYPE_CHECKING:
    from ingest.loaders.registry import LoaderRegistry, default_registry

__all__ = ["Loader", "LoaderLimits", "LoaderRegistry", "default_registry"]


def __getattr__(name: str) -> Any:
    if name in ("LoaderRegistry", "default_registry"):
        from ingest.loaders import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
