"""Rich progress bars: ingestion (files, chunks, chunks/s, ETA) and answer evaluation (running metrics)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from pipelines.evaluation.answers import QuestionResult


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


class AnswerProgress:
    """A progress bar over questions with running EM, F1, answer rate and errors: cheap sums per question."""

    def __init__(self, console: Console, label: str, total: int, *, enabled: bool = True) -> None:
        self.n = self.answered = self.errors = 0
        self.em = self.f1 = 0.0
        # compact enough for 80 columns with a 20-character label: a log file gets 80
        self._progress = Progress(
            TextColumn(f"[bold]{escape(label)}"),
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            TextColumn("EM {task.fields[em]:.2f} F1 {task.fields[f1]:.2f} ans {task.fields[answered]:.0%}"),
            TextColumn("err {task.fields[errors]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task(label, total=total, em=0.0, f1=0.0, answered=0.0, errors=0)

    def __enter__(self) -> AnswerProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def add(self, result: QuestionResult) -> None:
        """Count one finished question: answered now, or read back from the record file on resume."""
        self.n += 1
        if result.error is not None:
            self.errors += 1
        else:
            self.em += result.exact_match
            self.f1 += result.f1
            self.answered += not result.abstained
        ok = max(self.n - self.errors, 1)
        self._progress.update(
            self._task,
            advance=1,
            em=self.em / ok,
            f1=self.f1 / ok,
            answered=self.answered / ok,
            errors=self.errors,
        )
