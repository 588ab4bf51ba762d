"""`kag documents` and `kag search` show root-relative sources; re-ingesting the same folder from another
working directory still finds every document unchanged (identity is the absolute path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kag.cli import app

runner = CliRunner()


def run(env: dict[str, str], *args: str) -> dict | list:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_listing_and_search_are_relative_and_a_reingest_from_another_cwd_is_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"KAG_DATA_DIR": str(tmp_path / "data"), "KAG_CHUNK_SIZE": "64", "KAG_CHUNK_OVERLAP": "8"}
    corpus = tmp_path / "work" / "corpus"
    (corpus / "policies").mkdir(parents=True)
    (corpus / "welcome.md").write_text("# Welcome\n\nThe Heron team bills customers monthly.\n")
    (corpus / "policies" / "leave.txt").write_text("Employees get 25 leave days per year.\n")

    monkeypatch.chdir(tmp_path / "work")
    first = run(env, "ingest", "corpus", "-c", "hr", "--json")
    assert first["documents_added"] == 2  # type: ignore[index]
    listed = run(env, "documents", "-c", "hr", "--json")
    assert sorted(d["source_uri"] for d in listed) == ["policies/leave.txt", "welcome.md"]  # type: ignore[index]
    hits = run(env, "search", "leave days", "-c", "hr", "--json")["results"]  # type: ignore[call-overload]
    assert hits and {h["source_uri"] for h in hits} <= {"policies/leave.txt", "welcome.md"}

    absolute = run({**env, "KAG_SOURCE_URI": "absolute"}, "documents", "-c", "hr", "--json")
    assert sorted(d["source_uri"] for d in absolute) == sorted(  # type: ignore[index]
        str(p.resolve()) for p in (corpus / "policies" / "leave.txt", corpus / "welcome.md")
    )

    # the same folder by another relative path, from another directory: nothing is new
    monkeypatch.chdir(corpus / "policies")
    again = run(env, "ingest", "..", "-c", "hr", "--json")
    assert (again["documents_unchanged"], again["documents_added"], again["documents_updated"]) == (2, 0, 0)  # type: ignore[index]
    after = run(env, "documents", "-c", "hr", "--json")
    assert [(d["id"], d["source_uri"]) for d in after] == [(d["id"], d["source_uri"]) for d in listed]  # type: ignore[index]
