"""The zip-bomb guard every zip-based loader (.docx, .xlsx, .pptx) runs before parsing."""

from __future__ import annotations

import io
import zipfile

from ingest.loaders.base import LoaderLimits
from kag.errors import CorruptDocumentError, FileTooLargeError
from kag.units import MB, describe_limit, describe_size

#: entries smaller than this are never refused for their compression ratio (tiny XML parts compress well)
RATIO_FLOOR_BYTES = 1 * MB


def check_zip(data: bytes, source: str, limits: LoaderLimits, *, kind: str) -> None:
    """Refuse a zip whose declared contents pass `limits`, reading only its central directory.

    The declared sizes bound what is inflated later: `zipfile` stops reading an entry at its declared
    `file_size` (and fails its CRC check) even when the compressed stream holds more, so summing them
    here bounds the memory python-docx, openpyxl and python-pptx can use."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise CorruptDocumentError(
            f"{source}: not a readable {kind} file (a {kind} is a zip archive: {exc})",
            hint=f"the file may be damaged or not really a {kind}; re-save it as {kind}",
            source=source,
        ) from exc
    if len(entries) > limits.max_zip_entries:
        raise FileTooLargeError(
            f"{source}: holds {len(entries):,} zip entries, over the limit of {limits.max_zip_entries:,}",
            hint="a real document has far fewer parts; if it is genuine, raise KAG_MAX_ZIP_ENTRIES",
            source=source,
        )
    total = sum(entry.file_size for entry in entries)
    if total > limits.max_uncompressed_bytes:
        raise FileTooLargeError(
            f"{source}: would inflate to {describe_size(total)} from {len(data):,} bytes, over the "
            f"{describe_limit(limits.max_uncompressed_bytes)} limit (KAG_MAX_UNCOMPRESSED_MB)",
            hint="it may be a zip bomb; if it is genuine, raise KAG_MAX_UNCOMPRESSED_MB",
            source=source,
        )
    for entry in entries:
        if entry.file_size > RATIO_FLOOR_BYTES:
            ratio = entry.file_size / max(entry.compress_size, 1)
            if ratio > limits.max_zip_ratio:
                raise FileTooLargeError(
                    f"{source}: its part {entry.filename} inflates {ratio:,.0f}-fold "
                    f"({entry.compress_size:,} to {entry.file_size:,} bytes), over the limit of "
                    f"{limits.max_zip_ratio:g} (KAG_MAX_ZIP_RATIO)",
                    hint="it may be a zip bomb; if it is genuine, raise KAG_MAX_ZIP_RATIO",
                    source=source,
                )
