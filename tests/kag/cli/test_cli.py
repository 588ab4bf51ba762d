"""The `kag` command line through Typer's CliRunner, on real stores and models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kag.cli import app
from kag.ledger import Ledger
from kag.stores.bundle import DataDirLock
from tests.ingest.corpus_factory import make_bad_files, make_corpus

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"KAG_DATA_DIR": str(tmp_path / "data"), "KAG_CHUNK_SIZE": "64", "KAG_CHUNK_OVERLAP": "8"}


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_ingest_search_doctor_delete_round_trip(env: dict[str, str], tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    bad = make_bad_files(corpus)
    code, out, _ = run(env, "ingest", str(corpus), "-c", "hr", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["documents_added"] == 6 and report["documents_failed"] == len(bad)
    assert {Path(e["path"]).name: e["code"] for e in report["errors"]} == bad
    assert report["chunks_added"] > 0 and report["job_id"]

    code, out, _ = run(env, "ingest", str(corpus), "-c", "hr", "--json")
    again = json.loads(out)
    assert code == 0 and again["chunks_added"] == 0 and again["documents_unchanged"] == 6

    ledger = Ledger(f"sqlite:///{Path(env['KAG_DATA_DIR']) / 'ledger.sqlite3'}")
    for mode in ("dense", "lexical", "graph", "hybrid"):
        code, out, err = run(
            env, "search", "Which cache does the Atlas gateway use?", "-c", "hr", "--mode", mode, "--json"
        )
        assert code == 0, err
        results = json.loads(out)["results"]
        assert results, mode
        for hit in results:
            doc = ledger.get_document(hit["document_id"])
            assert doc.text[hit["char_start"] : hit["char_end"]] == hit["text"]
        if mode in ("lexical", "hybrid", "dense"):
            assert any("Redis" in hit["text"] for hit in results[:3]), mode
    ledger.close()

    code, out, _ = run(env, "doctor", "--json")
    assert code == 0 and json.loads(out)["consistent"] is True

    code, out, _ = run(env, "delete", "--source", str(corpus / "runbook.txt"), "-c", "hr")
    assert code == 0 and "deleted" in out
    code, out, _ = run(env, "documents", "-c", "hr", "--json")
    assert all(not d["source_uri"].endswith("runbook.txt") for d in json.loads(out))
    code, out, _ = run(env, "doctor", "--json")
    assert code == 0 and json.loads(out)["consistent"] is True

    code, out, _ = run(env, "jobs", "--json")
    assert code == 0 and len(json.loads(out)) == 2


def test_ingest_exits_non_zero_when_every_file_fails(env: dict[str, str], tmp_path: Path) -> None:
    make_bad_files(tmp_path / "bad")
    code, out, err = run(env, "ingest", str(tmp_path / "bad"), "-c", "hr")
    assert code == 1
    assert "unsupported_format" in err and "4 failed" in out


def test_errors_are_one_line_and_exit_1(env: dict[str, str], tmp_path: Path) -> None:
    make_corpus(tmp_path / "corpus")
    run(env, "ingest", str(tmp_path / "corpus" / "leave.md"), "-c", "hr")
    code, _, err = run(env, "search", "anything", "-c", "nope")
    assert code == 1 and err.startswith("Error: no collection named nope")
    code, _, err = run(env, "delete", "d_doesnotexist")
    assert code == 1 and err.startswith("Error: no document with id d_doesnotexist")
    code, _, err = run(env, "delete")
    assert code == 1 and "either a DOCUMENT_ID or --source" in err


def test_second_writer_gets_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    lock = DataDirLock(Path(env["KAG_DATA_DIR"]))
    lock.acquire()
    try:
        code, _, err = run(env, "ingest", str(make_corpus(tmp_path / "c")), "-c", "hr")
    finally:
        lock.release()
    assert code == 1 and "is in use by another kag process" in err


def test_config_markdown_lists_every_setting(env: dict[str, str]) -> None:
    from kag.settings import Settings

    code, out, _ = run(env, "config", "--markdown")
    assert code == 0
    for name in Settings.model_fields:
        assert f"`KAG_{name.upper()}`" in out
