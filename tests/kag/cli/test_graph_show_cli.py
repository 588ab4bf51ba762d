"""`kag graph show` through Typer's CliRunner on a real ledger with the real extractor's graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kag.cli import app
from kag.ledger import Ledger
from kag.settings import Settings
from tests.kag.graph_docs import HORMONES, REGULATION, TRIAL, write_doc

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    return {"KAG_DATA_DIR": str(tmp_path / "data"), "KAG_DATABASE_URL": None, "COLUMNS": "200"}


@pytest.fixture
def ledger(env: dict[str, str | None]):
    led = Ledger(Settings(data_dir=Path(str(env["KAG_DATA_DIR"]))).resolved_database_url)
    yield led
    led.close()


def run(env: dict[str, str | None], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_show_lists_relations_with_grades_kinds_and_document_offsets(env, ledger, spacy_extractor) -> None:
    hormones = write_doc(ledger, spacy_extractor, "sci", "/hormones.md", HORMONES, {"source_kind": "paper"})
    code, out, _ = run(env, "graph", "show", "Insulin", "-c", "sci", "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["entity"]["key"] == "insulin" and shown["entity"]["collection"] == "sci"
    (opposes,) = [r for r in shown["relations"] if r["type"] == "OppositeTo"]
    assert (opposes["source"], opposes["target"]) == ("Insulin", "glucagon")
    assert opposes["grade"] == "B" and opposes["source_kind"] == "paper" and opposes["strength"] >= 0.6
    ev = opposes["evidence"]
    assert ev["document_id"] == hormones.document_id
    assert ev["quote"] == "Insulin opposes glucagon in the liver."
    # document-absolute: the sentence is in the third paragraph, not at the start of the text
    assert ev["doc_start"] == HORMONES.index("Insulin opposes") > 0
    assert HORMONES[ev["doc_start"] : ev["doc_end"]] == ev["quote"]

    code, out, _ = run(env, "graph", "show", "insulin", "-c", "sci")
    assert code == 0
    assert "OppositeTo" in out and "paper" in out and "Insulin opposes glucagon in the liver." in out
    assert f"[{ev['doc_start']}:{ev['doc_end']}]" in out


def test_show_marks_the_winner_of_a_conflict(env, ledger, spacy_extractor) -> None:
    write_doc(ledger, spacy_extractor, "sci", "/hormones.md", HORMONES)
    write_doc(ledger, spacy_extractor, "sci", "/regulation.md", REGULATION)
    relations = json.loads(run(env, "graph", "show", "insulin", "-c", "sci", "--json")[1])["relations"]
    by_type = {r["type"]: r for r in relations if r["target"] == "glucagon"}
    # both B: the newer statement wins
    assert by_type["Influences"]["conflict"] == "won" and by_type["OppositeTo"]["conflict"] == "lost"
    write_doc(ledger, spacy_extractor, "sci", "/trial.md", TRIAL, {"reproducible": True})
    relations = json.loads(run(env, "graph", "show", "insulin", "-c", "sci", "--json")[1])["relations"]
    by_type = {r["type"]: r for r in relations if r["target"] == "glucagon"}
    # two documents (one reproducible) state OppositeTo: grade A beats the newer B
    assert by_type["OppositeTo"]["grade"] == "A" and by_type["OppositeTo"]["documents"] == 2
    assert by_type["OppositeTo"]["conflict"] == "won" and by_type["Influences"]["conflict"] == "lost"


def test_unknown_entity_and_collection_are_clear_errors(env, ledger, spacy_extractor) -> None:
    write_doc(ledger, spacy_extractor, "sci", "/hormones.md", HORMONES)
    code, out, err = run(env, "graph", "show", "dopamine", "-c", "sci")
    assert code == 1 and out == ""
    assert "Error: no entity named 'dopamine' in the collection sci" in err
    code, _, err = run(env, "graph", "show", "insulin", "-c", "nope")
    assert code == 1 and "Error: no collection named nope (known collections: sci)" in err
    code, _, err = run(env, "graph", "show", "  ", "-c", "sci")
    assert code == 1 and "Error: the entity name is empty" in err
    # nothing was changed by the failed lookups
    assert json.loads(run(env, "graph", "show", "insulin", "-c", "sci", "--json")[1])["relations"]
