"""Ingestion jobs count truly: a resumed job counts what its interrupted attempt wrote as added, the
job row is saved after every file, and a job whose owner died is found stale."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from ingest import upkeep
from ingest.pipeline import Ingestor
from kag.ledger import Ledger
from kag.ledger.models import IngestJobRow, utcnow
from tests.ingest.test_pipeline import build_ingestor


@pytest.fixture
def ingestor(ledger_url: str, tmp_path: Path, embedder: Any) -> Iterator[Ingestor]:
    ing = build_ingestor(tmp_path / "data", ledger_url, embedder, None)
    yield ing
    ing.stores.close()


def notes(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"note-{i:03d}.md").write_text(f"# Note {i}\n\nTeam {i} owns service {i} and its pager. " * 3)
    return root


class StopAfter:
    """A progress listener that asks the job to stop once `n` files are done (a server shutting down)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = 0

    def on_start(self, files_total: int) -> None:
        pass

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        self.done += 1

    def should_stop(self) -> bool:
        return self.done >= self.n


def test_a_resumed_job_counts_what_its_interrupted_attempt_added(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = notes(tmp_path / "corpus", 40)
    ingestor.batch_chunks = 4  # a batch per file or two, so the stop lands part-way
    stop = StopAfter(10)
    first = ingestor.ingest([corpus], "hr", job_id="job-1", listener=stop, should_stop=stop.should_stop)
    assert first.status == "interrupted" and 0 < first.documents_added < 40
    resumed = ingestor.ingest([corpus], "hr", job_id="job-1")
    assert resumed.status == "completed"
    assert (resumed.documents_added, resumed.documents_unchanged) == (40, 0)
    assert resumed.chunks_added == len(ingestor.stores.ledger.chunk_ids("hr"))
    job, _ = ingestor.stores.ledger.get_job("job-1")
    assert (job.documents_added, job.documents_unchanged, job.files_done, job.chunks_added) == (
        40,
        0,
        40,
        resumed.chunks_added,
    )
    # another job over the same files finds them all unchanged
    other = ingestor.ingest([corpus], "hr")
    assert (other.documents_added, other.documents_unchanged, other.chunks_added) == (0, 40, 0)


def test_a_resumed_job_counts_an_update_of_its_interrupted_attempt_as_updated(
    ingestor: Ingestor, tmp_path: Path
) -> None:
    corpus = notes(tmp_path / "corpus", 3)
    ingestor.ingest([corpus], "hr")
    (corpus / "note-001.md").write_text("# Note 1\n\nTeam 1 moved to the billing service.\n")
    stop = StopAfter(1)
    ingestor.batch_chunks = 1
    ingestor.ingest([corpus], "hr", job_id="job-2", listener=stop, should_stop=stop.should_stop)
    resumed = ingestor.ingest([corpus], "hr", job_id="job-2")
    assert (resumed.documents_updated, resumed.documents_unchanged, resumed.documents_added) == (1, 2, 0)


class RowWatcher:
    """A progress listener that reads the job row as each file is reported done."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.job_id: str | None = None
        self.seen: list[tuple[int, int]] = []  # (files reported done, files_done in the saved row)

    def on_start(self, files_total: int) -> None:
        job = self.ledger.jobs(limit=1)[0]
        self.job_id = job.id

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        assert self.job_id is not None
        job, _ = self.ledger.get_job(self.job_id)
        self.seen.append((len(self.seen) + 1, job.files_done))


def test_job_progress_is_saved_for_every_file(ingestor: Ingestor, tmp_path: Path) -> None:
    corpus = notes(tmp_path / "corpus", 12)
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    ingestor.batch_chunks = 10_000  # every new file in one batch: progress must not wait for it
    ingestor.ingest([corpus], "hr")
    (corpus / "note-005.md").write_text("# Note 5\n\nTeam 5 owns nothing now.\n")
    watcher = RowWatcher(ingestor.stores.ledger)
    report = ingestor.ingest([corpus], "hr", listener=watcher)
    assert report.files_total == 13 and report.documents_unchanged == 11
    # the saved row never lags the files reported: an unchanged or failed file is saved at once
    assert watcher.seen == [(n, n) for n in range(1, 14)]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_jobs_are_those_whose_owner_is_gone(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.ensure_collection("hr")
    for job in ("alive", "dead-pid", "far-fresh", "far-silent", "legacy"):
        ledger.create_job(job, "hr", {})
    old = utcnow() - timedelta(hours=2)
    with ledger.session() as s:
        s.execute(update(IngestJobRow).where(IngestJobRow.id == "dead-pid").values(owner_pid=_dead_pid()))
        s.execute(update(IngestJobRow).where(IngestJobRow.id == "far-fresh").values(owner_host="elsewhere"))
        s.execute(
            update(IngestJobRow).where(IngestJobRow.id == "far-silent").values(owner_host="elsewhere", heartbeat_at=old)
        )
        s.execute(
            update(IngestJobRow)
            .where(IngestJobRow.id == "legacy")
            .values(owner_host=None, owner_pid=None, heartbeat_at=None)
        )
    assert sorted(j.id for j in ledger.stale_jobs(600)) == ["dead-pid", "far-silent", "legacy"]
    ledger.update_job("far-silent", files_done=3)  # a heartbeat: the owner is working again
    assert sorted(j.id for j in ledger.stale_jobs(600)) == ["dead-pid", "legacy"]
    assert ledger.interrupt_stale_jobs(600) == 2
    statuses = {j.id: j.status for j in ledger.jobs()}
    assert statuses == {
        "alive": "running",
        "dead-pid": "interrupted",
        "far-fresh": "running",
        "far-silent": "running",
        "legacy": "interrupted",
    }
    ledger.close()


def test_doctor_reports_a_stale_job_and_the_next_job_interrupts_only_it(ingestor: Ingestor) -> None:
    ledger = ingestor.stores.ledger
    ledger.ensure_collection("hr")
    ledger.create_job("killed", "hr", {})
    ledger.create_job("other-host", "hr", {})
    with ledger.session() as s:
        s.execute(update(IngestJobRow).where(IngestJobRow.id == "killed").values(owner_pid=_dead_pid()))
        s.execute(update(IngestJobRow).where(IngestJobRow.id == "other-host").values(owner_host="elsewhere"))
    health = upkeep.check(ingestor.stores)
    assert not health.consistent
    assert [(j.job_id, j.collection) for j in health.stale_jobs] == [("killed", "hr")]
    assert health.to_dict()["stale_jobs"][0]["owner"].endswith(f":{ledger.get_job('killed')[0].owner_pid}")  # type: ignore[index]
    ingestor.ingest([], "hr")
    assert ledger.get_job("killed")[0].status == "interrupted"
    assert ledger.get_job("other-host")[0].status == "running"  # alive elsewhere: left alone
    assert upkeep.check(ingestor.stores).stale_jobs == []
    assert os.getpid() == ledger.get_job("other-host")[0].owner_pid
