"""Folder discovery: every entry that is not an ingestible file is a per-file error, never a silent skip;
each `file failed` log line names its file; documents keep a root-relative name for readers."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.loaders import default_registry
from ingest.pipeline import Ingestor, discover, discover_sources
from tests.ingest.test_pipeline import build_ingestor


def _is_document(name: str) -> bool:
    try:
        default_registry().for_path(name)
    except Exception:
        return False
    return True


def make_tree(root: Path) -> dict[str, str]:
    """Good files plus one of each bad entry; -> bad entry path -> a word its error message must hold."""
    (root / "sub").mkdir(parents=True)
    (root / "good.txt").write_text("Heron bills customers monthly.\n")
    (root / "sub" / "notes.md").write_text("# Notes\n\nMagpie retries deliveries three times.\n")
    (root / ".hidden.txt").write_text("hidden files stay out, as before\n")
    bad = {}
    # a symbolic link loop of two links, and a folder link that leads back to its own parent
    os.symlink(root / "loop-b.txt", root / "loop-a.txt")
    os.symlink(root / "loop-a.txt", root / "loop-b.txt")
    bad[str(root / "loop-a.txt")] = "loop"
    bad[str(root / "loop-b.txt")] = "loop"
    os.symlink(root, root / "sub" / "back-to-root")
    bad[str(root / "sub" / "back-to-root")] = "loop"
    os.symlink(root / "gone.txt", root / "dangling.txt")
    bad[str(root / "dangling.txt")] = "broken symbolic link"
    os.mkfifo(root / "pipe.txt")
    bad[str(root / "pipe.txt")] = "FIFO"
    (root / "x.txt").mkdir()
    bad[str(root / "x.txt")] = "folder, not a file"
    return bad


def test_discover_reports_every_bad_entry_and_keeps_the_good_files(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    bad = make_tree(root)
    found = discover_sources([root], _is_document)
    assert [p.name for p in found.files] == ["good.txt", "notes.md"]
    assert sorted(found.names.values()) == ["good.txt", "sub/notes.md"]
    errors = {e.path: e for e in found.errors}
    assert set(errors) == set(bad)
    for path, word in bad.items():
        assert errors[path].code == "unreadable_path"
        assert word in errors[path].message and path in errors[path].message
    # the plain form gives the same files and errors
    files, plain_errors = discover([root])
    assert files == found.files and len(plain_errors) == len(bad) - 1  # no registry: x.txt is just a folder


def test_a_folder_named_like_a_document_is_still_walked(tmp_path: Path) -> None:
    (tmp_path / "x.txt").mkdir()
    (tmp_path / "x.txt" / "inner.txt").write_text("inside\n")
    found = discover_sources([tmp_path], _is_document)
    assert [p.name for p in found.files] == ["inner.txt"]
    assert [e.path for e in found.errors] == [str(tmp_path / "x.txt")]
    assert found.names[str((tmp_path / "x.txt" / "inner.txt").resolve())] == "x.txt/inner.txt"


def test_top_level_arguments_and_globs_get_clear_errors_and_relative_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.md").write_text("one\n")
    (tmp_path / "a" / "two.md").write_text("two\n")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    found = discover_sources(
        [
            tmp_path / "a" / "one.md",
            f"{tmp_path}/a/*.md",
            tmp_path / "missing",
            tmp_path / "dangling",
            f"{tmp_path}/*.zip",
        ]
    )
    assert sorted(found.names.values()) == ["one.md", "two.md"]
    messages = [e.message for e in found.errors]
    assert any("does not exist" in m for m in messages)
    assert any("broken symbolic link" in m for m in messages)
    assert any("no file matches" in m for m in messages)


@pytest.fixture
def ingestor(tmp_path: Path, embedder) -> Iterator[Ingestor]:
    ing = build_ingestor(tmp_path / "data", f"sqlite:///{tmp_path / 'ledger.sqlite3'}", embedder, None)
    yield ing
    ing.stores.close()


def test_a_folder_ingest_counts_each_bad_entry_as_a_failed_file_and_logs_its_name(
    ingestor: Ingestor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "corpus"
    bad = make_tree(root)
    with caplog.at_level(logging.WARNING, logger="kag.ingest"):
        report = ingestor.ingest([root], "hr")
    assert report.status == "completed"
    assert (report.documents_added, report.documents_failed) == (2, len(bad))
    assert report.files_total == 2 + len(bad)
    assert {e.path for e in report.errors} == set(bad)
    assert {d.source_path for d in ingestor.stores.ledger.documents("hr")} == {"good.txt", "sub/notes.md"}
    # the job record holds them too, and each log line names its file in the message itself
    job, job_errors = ingestor.stores.ledger.get_job(report.job_id)
    assert job.documents_failed == len(bad) and {e.path for e in job_errors} == set(bad)
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("file failed")]
    assert len(failed) == len(bad)
    for path in bad:
        assert any(path in line for line in failed), (path, failed)


def test_a_file_failed_line_names_a_file_that_fails_to_parse(
    ingestor: Ingestor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "fine.txt").write_text("fine\n")
    with caplog.at_level(logging.WARNING, logger="kag.ingest"):
        report = ingestor.ingest([tmp_path / "broken.pdf", tmp_path / "fine.txt"], "hr")
    assert (report.documents_added, report.documents_failed) == (1, 1)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("file failed")]
    assert str(tmp_path / "broken.pdf") in line and "corrupt" in line
