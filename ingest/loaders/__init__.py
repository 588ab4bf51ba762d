"""Loaders turn one file's bytes into a ParsedDocument; the registry picks one per file."""

from ingest.loaders.base import Loader, LoaderRegistry, default_registry

__all__ = ["Loader", "LoaderRegistry", "default_registry"]
