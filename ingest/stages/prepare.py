"""Stage 1, first half: read, parse and chunk one file. Needs no store, so it runs on any worker."""

from __future__ import annotations

import logging
from pathlib import Path

from ingest.loaders.base import check_text_length
from ingest.protocols import (
    ChunkerLike,
    FileError,
    Item,
    KnownDocument,
    LoaderRegistryLike,
    Prepared,
    Unchanged,
)
from kag import ids
from kag.errors import DocumentError, FileTooLargeError, KagError, UnreadablePathError
from kag.ledger.models import DocumentStatus
from kag.units import MB, describe_limit, describe_size

log = logging.getLogger("kag.ingest")


class Preparer:
    """Reads, parses and chunks one file (graph extraction is stage 2's, in `ingest.stages.graph`)."""

    def __init__(
        self,
        chunker: ChunkerLike,
        registry: LoaderRegistryLike,
        *,
        max_file_bytes: int = 50 * MB,
        max_document_chars: int | None = None,
        fingerprint: str = "",
    ) -> None:
        self.chunker = chunker
        self.registry = registry
        self.max_file_bytes = max_file_bytes
        self.max_document_chars = max_document_chars
        self.fingerprint = fingerprint

    def prepare(self, path: Path, collection: str, known: KnownDocument | None) -> Item:
        """A prepared document, a FileError, or `Unchanged` when the file is unchanged since `known`."""
        shown = str(path)
        source_uri = str(path.resolve())
        try:
            try:
                size = path.stat().st_size
                if size > self.max_file_bytes:
                    raise FileTooLargeError(
                        f"{shown} is {describe_size(size)}, over the {describe_limit(self.max_file_bytes)} limit",
                        hint="raise KAG_MAX_FILE_SIZE_MB (in MB of 10^6 bytes) to ingest it",
                    )
                data = path.read_bytes()
            except OSError as exc:
                raise UnreadablePathError(f"cannot read {shown}: {exc.strerror or exc}") from exc
            sha = ids.sha256_bytes(data)
            if (
                known is not None
                and known.sha256 == sha
                and known.status == DocumentStatus.INDEXED
                and known.fingerprint == self.fingerprint
            ):
                return Unchanged(shown, source_uri, known)
            loader = self.registry.for_path(path)
            parsed = loader.load(data, source=shown)
            # every loader, a plugin's too, is held to the text limit (the built-ins stop early)
            check_text_length(parsed.text, shown, self.max_document_chars)
            chunks = self.chunker.chunk(parsed)
            return Prepared(shown, source_uri, sha, len(data), parsed, chunks, known is not None)
        except DocumentError as exc:
            return FileError(shown, exc.code, str(exc))
        except KagError:
            raise
        except Exception as exc:
            log.exception("unexpected error while preparing a file", extra={"path": shown})
            return FileError(shown, "internal_error", f"{exc.__class__.__name__}: {exc}")
