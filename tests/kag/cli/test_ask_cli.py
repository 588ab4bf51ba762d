"""`kag ask` and `kag audit replay` through Typer's CliRunner, on real stores and the bundled models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from kag.cli import app
from kag.ledger import Ledger
from kag.ledger.models import AuditRecordRow
from tests.ingest.corpus_factory import make_corpus

runner = CliRunner()
QUESTION = "Which cache does the Atlas gateway use?"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    root = tmp_path_factory.mktemp("ask")
    env: dict[str, str | None] = {
        "KAG_DATA_DIR": str(root / "data"),
        "KAG_DATABASE_URL": None,
        "KAG_CHUNK_SIZE": "64",
        "KAG_CHUNK_OVERLAP": "8",
        "KAG_LLM_MAX_TOKENS": "64",
        "KAG_LLM_N_CTX": "2048",
    }
    corpus = make_corpus(root / "corpus")
    result = runner.invoke(app, ["ingest", str(corpus), "-c", "hr"], env=env)
    assert result.exit_code == 0, result.stderr
    env["CORPUS"] = str(corpus)  # not a setting: where the tests below find the ingested files
    return env


def run(env: dict[str, str | None], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def ledger(env: dict[str, str | None]) -> Ledger:
    return Ledger(f"sqlite:///{Path(str(env['KAG_DATA_DIR'])) / 'ledger.sqlite3'}")


def test_ask_json_is_grounded_and_audited(env: dict[str, str | None]) -> None:
    code, out, err = run(env, "ask", QUESTION, "-c", "hr", "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["question"] == QUESTION and answer["collections"] == ["hr"] and answer["audit_id"]
    assert answer["policy"] == "extractive"
    led = ledger(env)
    try:
        for citation in answer["citations"]:
            text = led.get_document(citation["document_id"]).text
            assert text[citation["char_start"] : citation["char_end"]] == citation["quote"]
        shown = [s for s in answer["sentences"] if s["action"] != "dropped"]
        assert answer["abstained"] or (shown and all(s["supported"] and s["citations"] for s in shown))
    finally:
        led.close()


def test_ask_text_shows_answer_sources_verdicts_and_audit_id(env: dict[str, str | None]) -> None:
    code, out, err = run(env, "ask", QUESTION, "-c", "hr", "--policy", "flag")
    assert code == 0, err
    assert "audit record a_" in out
    assert "Verification" in out or "abstained" in out


def test_ask_stream_prints_tokens_to_stderr(env: dict[str, str | None]) -> None:
    code, out, err = run(env, "ask", QUESTION, "-c", "hr", "--stream")
    assert code == 0
    assert "model output:" in err and "audit record a_" in out


def test_ask_unknown_collection_is_a_one_line_error(env: dict[str, str | None]) -> None:
    code, out, err = run(env, "ask", QUESTION, "-c", "nope")
    assert code == 1 and err.startswith("Error: no collection named nope") and out == ""


def test_ask_rejects_an_unknown_policy(env: dict[str, str | None]) -> None:
    code, _, err = run(env, "ask", QUESTION, "-c", "hr", "--policy", "shout")
    assert code == 2 and "shout" in err


def test_replay_reproduces_a_recorded_answer_and_refuses_a_tampered_one(env: dict[str, str | None]) -> None:
    code, out, _ = run(env, "ask", QUESTION, "-c", "hr", "--json")
    record_id = json.loads(out)["audit_id"]
    code, out, err = run(env, "audit", "replay", record_id, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["identical"] is True and report["replayed_output"] == report["recorded_output"]

    led = ledger(env)
    try:
        with led.engine.begin() as conn:
            payload = conn.execute(select(AuditRecordRow.payload).where(AuditRecordRow.id == record_id)).scalar_one()
            tampered = payload.replace('"seed":42', '"seed":43')
            assert tampered != payload
            conn.execute(update(AuditRecordRow).where(AuditRecordRow.id == record_id).values(payload=tampered))
    finally:
        led.close()
    code, _, err = run(env, "audit", "replay", record_id)
    assert code == 1 and "was altered" in err
    code, _, err = run(env, "audit", "verify")
    assert code == 1 and record_id in err


def test_replay_of_an_abstention_without_generation_says_so(env: dict[str, str | None]) -> None:
    led = ledger(env)
    try:
        from kag.audit import AuditLog

        entry = AuditLog(led).append(
            {"principal": "cli", "collections": ["hr"], "question": "q", "generated": False, "reason": "no sources"}
        )
    finally:
        led.close()
    code, _, err = run(env, "audit", "replay", entry.id)
    assert code == 1 and "no model output to replay" in err


def test_replay_unknown_record_is_not_found(env: dict[str, str | None]) -> None:
    code, _, err = run(env, "audit", "replay", "a_doesnotexist")
    assert code == 1 and err.startswith("Error: no audit record with id a_doesnotexist")


def test_search_and_ask_filters_restrict_to_matching_documents(env: dict[str, str | None]) -> None:
    leave = str(Path(str(env["CORPUS"])) / "leave.md")
    code, out, err = run(env, "search", "leave days", "-c", "hr", "--source", leave, "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    # shown by its path under the ingested folder (KAG_SOURCE_URI=relative, the default)
    assert results and {r["source_uri"] for r in results} == {"leave.md"}
    doc_id = results[0]["document_id"]
    code, out, _ = run(env, "search", QUESTION, "-c", "hr", "--document", doc_id, "--json")
    assert code == 0 and {r["document_id"] for r in json.loads(out)["results"]} <= {doc_id}
    code, out, _ = run(env, "ask", QUESTION, "-c", "hr", "--document", doc_id, "--json")
    answer = json.loads(out)
    assert code == 0 and {s["document_id"] for s in answer["sources"]} <= {doc_id}
    code, out, _ = run(env, "search", QUESTION, "-c", "hr", "--since", "2999-01-01", "--json")
    assert code == 0 and json.loads(out)["results"] == []


def test_a_bad_time_filter_is_a_one_line_error(env: dict[str, str | None]) -> None:
    code, out, err = run(env, "ask", QUESTION, "-c", "hr", "--since", "last tuesday")
    assert code == 1 and err.startswith("Error: --since 'last tuesday' is not an ISO-8601 time") and out == ""
