"""Rich progress bars: ingestion (the stage, files, chunks, chunks/s, ETA, then the graph) and answer
evaluation (running metrics)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ingest.protocols import EMBEDDING, GRAPH, PARSING, StageProgress

if TYPE_CHECKING:
    from pipelines.evaluation.answers import QuestionResult

#: a file's stage-1 steps, in thirds of a file: parsed, embedded, written (searchable)
_STEPS = {PARSING: 1, EMBEDDING: 2}
_THIRDS = 3


class IngestProgress:
    """A `ProgressListener` (with stages) that draws progress bars on a terminal, and nothing elsewhere.

    The files bar moves a third of a file as each file is parsed, another when its batch is embedded
    and the rest when it is written, so a corpus that fits in one batch still shows progress file by
    file; its label names the stage. Stage 2 gets its own bar, one step per document."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.chunks = 0
        self.stage = PARSING
        self.started = time.perf_counter()
        self._thirds = 0  # completed thirds of files
        self._steps: dict[str, int] = {}  # files part-way through stage 1 -> thirds done
        self._progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[chunks]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task("ingest", total=None, stage=PARSING, unit="files", chunks="", rate="")
        self._graph: TaskID | None = None

    def __enter__(self) -> IngestProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    @property
    def files_completed(self) -> float:
        """Files done so far, counting the parts of files part-way through stage 1."""
        return self._thirds / _THIRDS

    @property
    def graph_completed(self) -> int:
        return 0 if self._graph is None else int(self._progress.tasks[self._graph].completed)

    def on_start(self, files_total: int) -> None:
        self.started = time.perf_counter()
        self._progress.update(self._task, total=files_total)

    def on_stage(self, progress: StageProgress) -> None:
        if progress.stage == GRAPH:
            self._on_graph(progress)
            return
        self.stage = progress.stage
        step = _STEPS.get(progress.stage)
        if progress.path is not None and step is not None:
            before = self._steps.get(progress.path, 0)
            if step > before:
                self._steps[progress.path] = step
                self._thirds += step - before
        self._refresh()

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        self.chunks += chunks
        self._thirds += _THIRDS - self._steps.pop(path, 0)
        self._refresh()

    def _refresh(self) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        self._progress.update(
            self._task,
            completed=self.files_completed,
            stage=self.stage,
            chunks=f"{self.chunks} chunks",
            rate=f"{self.chunks / elapsed:.1f} chunks/s",
        )

    def _on_graph(self, progress: StageProgress) -> None:
        self.stage = GRAPH
        if self._graph is None:
            self._graph = self._progress.add_task(
                "graph", total=progress.total, stage=GRAPH, unit="documents", chunks="", rate=""
            )
        if progress.total is not None and progress.path is None:
            self._progress.update(self._graph, total=progress.total, completed=0)
        if progress.path is not None:
            self._progress.update(self._graph, advance=1)


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
