"""The commands that only read the ledger: no model or index library on their import path, whole ids in
their tables on a narrow terminal, and `kag documents show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kag.audit import AuditLog
from kag.cli import app
from kag.keys import KeyStore
from kag.ledger import Ledger
from kag.records import ChunkDraft, EntityRecord, GraphExtraction, MentionRecord, RelationRecord
from kag.settings import Settings

runner = CliRunner()
HEAVY = ("torch", "spacy", "sentence_transformers", "llama_cpp", "qdrant_edge", "tantivy")
TEXT = "Kestrel releases ship every Tuesday. The platform team runs Kestrel.\n\nRollbacks use the blue-green switch."


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    return {"KAG_DATA_DIR": str(tmp_path / "data"), "KAG_DATABASE_URL": None}


@pytest.fixture
def filled(env: dict[str, str | None]) -> dict[str, str]:
    """A ledger with a collection, a document (two chunks on two pages, a small graph), a job, a key and an
    audit record, written through the ledger's own API."""
    led = Ledger(Settings(_env_file=None, data_dir=Path(str(env["KAG_DATA_DIR"]))).resolved_database_url)
    try:
        led.ensure_collection("engineering-handbook")
        cut = TEXT.index("\n\n")
        chunks = [
            ChunkDraft(0, TEXT[:cut], 0, cut, 12, page=1, heading_path=("Kestrel",)),
            ChunkDraft(1, TEXT[cut + 2 :], cut + 2, len(TEXT), 8, page=2, heading_path=("Kestrel", "Rollbacks")),
        ]
        graph = GraphExtraction(
            entities=(
                EntityRecord("kestrel", "Kestrel", "PRODUCT"),
                EntityRecord("platform team", "platform team", "ORG"),
            ),
            mentions=(MentionRecord("kestrel", 0, 0, 7), MentionRecord("platform team", 0, 41, 54)),
            relations=(RelationRecord("platform team", "kestrel", "runs", 0.8, 0, 37, 68),),
        )
        written = led.write_document(
            collection="engineering-handbook",
            source_uri="/srv/docs/a/rather/long/folder/name/kestrel-release-guide.md",
            sha256="ab" * 32,
            mime_type="text/markdown",
            title="Kestrel release guide",
            text=TEXT,
            size_bytes=len(TEXT),
            metadata={},
            chunks=chunks,
            graph=graph,
        )
        led.mark_indexed([written.document_id])
        led.create_job("j_0123456789abcdef0123456789abcdef", "engineering-handbook", {})
        key, _ = KeyStore(led).create("release-bot", "reader", ["engineering-handbook"])
        entry = AuditLog(led).append(
            {"principal": key.id, "collections": ["engineering-handbook"], "question": "When do releases ship?"}
        )
    finally:
        led.close()
    return {
        "document": written.document_id,
        "key": key.id,
        "audit": entry.id,
        "job": "j_0123456789abcdef0123456789abcdef",
        "prefix": key.prefix,
    }


def run(env: dict[str, str | None], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


SCRIPT = """
import json, sys
from kag.cli import app
try:
    app(sys.argv[1:], prog_name="kag")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.stdin.read())))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "command",
    [
        ["collections"],
        ["documents"],
        ["documents", "show", "{document}"],
        ["jobs"],
        ["keys", "list"],
        ["audit", "list"],
    ],
    ids=lambda c: " ".join(c),
)
def test_ledger_only_commands_import_no_model_or_index_library(
    env: dict[str, str | None], filled: dict[str, str], command: list[str]
) -> None:
    args = [a.format(**filled) for a in command]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KAG_")}
    child_env.update({"KAG_DATA_DIR": str(env["KAG_DATA_DIR"]), "PYTHONPATH": str(Path(__file__).parents[3])})
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        input=json.dumps(HEAVY),
        capture_output=True,
        text=True,
        env=child_env,
        timeout=300,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    assert report["heavy"] == [], f"`kag {' '.join(args)}` imported {report['heavy']}"
    assert done.stdout.strip()


@pytest.mark.parametrize(
    ("command", "ids"),
    [
        (["collections"], ["engineering-handbook"]),
        (["documents"], ["{document}", "engineering-handbook"]),
        (["jobs"], ["{job}", "engineering-handbook"]),
        (["keys", "list"], ["{key}"]),
        (["audit", "list"], ["{audit}", "{key}"]),
        (["documents", "show", "{document}"], ["{document}"]),
    ],
    ids=["collections", "documents", "jobs", "keys-list", "audit-list", "documents-show"],
)
def test_tables_keep_ids_whole_on_a_narrow_terminal(
    env: dict[str, str | None], filled: dict[str, str], command: list[str], ids: list[str]
) -> None:
    code, out, err = run({**env, "COLUMNS": "40"}, *[a.format(**filled) for a in command])
    assert code == 0, err
    # each id whole on one line (a fold would put a border and a newline inside it), nothing cut with "…"
    for value in (i.format(**filled) for i in ids):
        assert value in out, (value, out)
    # (`kag keys list` shows a key's secret prefix followed by "…" on purpose)
    assert "…" not in out.replace(filled["prefix"] + "…", "")


def test_documents_show_prints_excerpt_chunks_pages_and_graph(
    env: dict[str, str | None], filled: dict[str, str]
) -> None:
    code, out, _ = run({**env, "COLUMNS": "120"}, "documents", "show", filled["document"])
    assert code == 0
    assert "Kestrel release guide" in out and filled["document"] in out
    assert "Kestrel releases ship every Tuesday." in out
    assert "pages      1-2" in out and "done: 2 entities, 2 mentions, 1 relations" in out
    assert "Chunks (2)" in out and "Kestrel > Rollbacks" in out

    code, out, _ = run(env, "documents", "show", filled["document"], "--json")
    data = json.loads(out)
    assert code == 0 and data["excerpt"] == TEXT and data["pages"] == [1, 2]
    assert data["graph"] == {"status": "done", "error": None, "entities": 2, "mentions": 2, "relations": 1}
    assert [(c["ordinal"], c["char_start"], c["page"]) for c in data["chunks"]] == [(0, 0, 1), (1, TEXT.index("R"), 2)]
    assert data["status"] == "indexed" and data["characters"] == len(TEXT)


def test_documents_show_an_unknown_id_is_a_clear_error(env: dict[str, str | None], filled: dict[str, str]) -> None:
    code, out, err = run(env, "documents", "show", "d_nope")
    assert code == 1 and out == ""
    assert err.startswith("Error: no document with id d_nope") and "kag documents" in err
    # the listing still works and still lists the document
    code, out, _ = run(env, "documents", "-c", "engineering-handbook", "--json")
    assert code == 0 and [d["id"] for d in json.loads(out)] == [filled["document"]]


def test_documents_list_works_while_the_data_dir_is_locked(env: dict[str, str | None], filled: dict[str, str]) -> None:
    from kag.stores.bundle import DataDirLock

    lock = DataDirLock(Path(str(env["KAG_DATA_DIR"])))
    lock.acquire()
    try:
        code, out, err = run(env, "collections", "--json")
    finally:
        lock.release()
    assert code == 0, err
    assert json.loads(out) == [{"collection": "engineering-handbook", "documents": 1, "chunks": 2}]
