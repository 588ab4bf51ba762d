"""A rich progress bar for ingestion: files, chunks, chunks/s and ETA."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class IngestProgress:
    """A `ProgressListener` that draws a progress bar on a terminal, and nothing elsewhere."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.chunks = 0
        self.started = time.perf_counter()
        self._progress = Progress(
            TextColumn("[bold]ingesting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TextColumn("{task.fields[chunks]} chunks"),
            TextColumn("{task.fields[rate]:.1f} chunks/s"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task("ingest", total=None, chunks=0, rate=0.0)

    def __enter__(self) -> IngestProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def on_start(self, files_total: int) -> None:
        self.started = time.perf_counter()
        self._progress.update(self._task, total=files_total)

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        self.chunks += chunks
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        self._progress.update(self._task, advance=1, chunks=self.chunks, rate=self.chunks / elapsed)
