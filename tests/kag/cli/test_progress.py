"""The CLI's ingestion progress bar moves file by file and names the stage, on a real ingestion."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from ingest.protocols import StageProgress
from kag.cli.progress import IngestProgress
from tests.ingest.test_pipeline import build_ingestor


class Recording(IngestProgress):
    """The real bar, noting (stage, files completed, files reported done) after every update."""

    def __init__(self) -> None:
        super().__init__(Console(file=io.StringIO(), force_terminal=True, width=120), enabled=True)
        self.updates: list[tuple[str, float, int]] = []
        self.done = 0

    def on_stage(self, progress: StageProgress) -> None:
        super().on_stage(progress)
        self.updates.append((self.stage, self.files_completed, self.done))

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        self.done += 1
        super().on_file_done(path, chunks, ok)
        self.updates.append((self.stage, self.files_completed, self.done))


def test_a_30_file_corpus_shows_progress_per_file_and_the_stage(
    tmp_path: Path, embedder: Any, spacy_extractor: Any
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"note-{i:02d}.md").write_text(f"# Note {i}\n\nThe Kestrel fleet manager schedules robot {i}.\n")
    ing = build_ingestor(tmp_path / "data", f"sqlite:///{tmp_path / 'l.db'}", embedder, spacy_extractor)
    ing.batch_chunks = 256  # the default: all 30 files fit in one batch
    try:
        with Recording() as bar:
            report = ing.ingest([corpus], "hr", listener=bar)
    finally:
        ing.stores.close()
    assert report.documents_added == 30
    before_any_done = [completed for _stage, completed, done in bar.updates if done == 0]
    # the bar moves while the batch is still being parsed and embedded, not 0% then 100%
    assert len(set(before_any_done)) >= 30 and 0 < max(before_any_done) < 30
    completed = [c for _s, c, _d in bar.updates]
    assert completed == sorted(completed) and completed[-1] == 30
    stages = list(dict.fromkeys(s for s, _c, _d in bar.updates))
    assert stages == ["parsing", "embedding", "indexing", "graph"]
    assert bar.graph_completed == 30
    rendered = bar._progress.console.file.getvalue()  # type: ignore[attr-defined]
    assert "graph" in rendered and "30/30" in rendered and "documents" in rendered  # the final frame
