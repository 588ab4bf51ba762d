"""`kag ingest --graph later`, `kag graph build`, and graph status in `kag documents`, `jobs`, `doctor`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ingest.corpus_factory import make_corpus
from tests.kag.cli.test_cli import env, run  # noqa: F401 - `env` is a fixture


def test_graph_later_then_graph_build(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    corpus = make_corpus(tmp_path / "corpus")
    code, out, err = run(env, "ingest", str(corpus), "-c", "hr", "--graph", "later", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["documents_added"] == 6 and report["graph"] is None
    code, out, _ = run(env, "documents", "-c", "hr", "--json")
    assert {(d["status"], d["graph_status"]) for d in json.loads(out)} == {("indexed", "pending")}
    code, out, _ = run(env, "search", "Which cache does the Atlas gateway use?", "-c", "hr", "--json")
    assert code == 0 and json.loads(out)["results"]  # hybrid works while the graph is pending
    code, out, _ = run(env, "search", "Which cache does the Atlas gateway use?", "-c", "hr", "--mode", "graph")
    assert code == 0 and "no results" in out
    code, out, _ = run(env, "doctor", "--json")
    doctor = json.loads(out)
    assert code == 0 and doctor["graph_pending"] == 6 and doctor["collections"][0]["graph_pending"] == 6
    code, out, _ = run(env, "doctor")
    assert "6 documents pending" in out

    code, _, err = run(env, "graph", "build", "-c", "nope")
    assert code == 1 and err.startswith("Error: no collection named nope")

    code, out, err = run(env, "graph", "build", "-c", "hr", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["documents_done"] == 6
    code, out, _ = run(env, "documents", "-c", "hr", "--json")
    assert {d["graph_status"] for d in json.loads(out)} == {"done"}
    code, out, _ = run(env, "jobs", "--json")
    assert json.loads(out)[0]["graph"] == {"pending": 0, "done": 6, "failed": 0}
    code, out, _ = run(
        env, "search", "Which cache does the Atlas gateway use?", "-c", "hr", "--mode", "graph", "--json"
    )
    assert code == 0 and json.loads(out)["results"]
    code, out, _ = run(env, "doctor", "--json")
    assert code == 0 and json.loads(out)["graph_pending"] == 0
