"""`kag eval` end to end through Typer's CliRunner on tiny datasets, with the real stores and models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kag.cli import app
from kag.ledger import Ledger

runner = CliRunner()

CORPUS = [
    {"_id": "d1", "title": "Copper smelting", "text": "Copper ore is smelted in a blast furnace at high heat."},
    {"_id": "d2", "title": "Honeybee navigation", "text": "Honeybees perform a waggle dance to show nestmates food."},
    {"_id": "d3", "title": "Volcanic islands", "text": "Hawaii formed over a hotspot under the Pacific plate."},
    {"_id": "d4", "title": "Tidal energy", "text": "Tidal turbines turn the flow of seawater into electricity."},
    {"_id": "d5", "title": "Medieval castles", "text": "Castles had moats and drawbridges for defence."},
    {"_id": "doc 6/odd id", "title": "", "text": "A lighthouse keeper tended the lamp every single night."},
]
QUERIES = {
    "q1": "waggle dance of honeybees",
    "q2": "hotspot Hawaii",
    "q3": "lighthouse keeper lamp",
    "q4": "blast furnace",
}
QRELS = {"test": [("q1", "d2", 1), ("q2", "d3", 1), ("q3", "doc 6/odd id", 1)], "train": [("q4", "d1", 1)]}


def write_beir(root: Path, *, qrels: bool = True) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in CORPUS) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in QUERIES.items()))
    if qrels:
        (root / "qrels").mkdir()
        for split, rows in QRELS.items():
            lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
            (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # default output folders land here, never in the checkout
    return {"KAG_DATA_DIR": str(tmp_path / "user-data"), "KAG_CHUNK_SIZE": "64", "KAG_CHUNK_OVERLAP": "8"}


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["eval", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_retrieval_end_to_end_and_cached_rerun(env: dict[str, str], tmp_path: Path) -> None:
    data = write_beir(tmp_path / "tiny")
    work, out = tmp_path / "work", tmp_path / "out"
    setups = "bm25-okapi,lexical,dense,graph,hybrid,hybrid+graph,default"
    args = ["retrieval", "--dataset", str(data), "--setups", setups, "--work-dir", str(work), "--out", str(out)]
    code, stdout, stderr = run(env, *args)
    assert code == 0, stderr
    assert "ingesting 6 documents" in stderr

    report = json.loads((out / "retrieval.json").read_text())
    assert report["queries"] == 3 and report["split"] == "test" and report["baseline"] == "bm25-okapi"
    rows = {r["name"]: r for r in report["setups"]}
    assert list(rows) == setups.split(",")
    # each query's words occur in exactly one document, so keyword retrieval ranks it first:
    # nDCG@10 = MRR@10 = R@10 = 1 for every query, worked out by hand
    for name in ("bm25-okapi", "lexical"):
        assert rows[name]["metrics"] == pytest.approx(
            {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0, "map": 1.0}
        ), name
        assert {q: r["top10"][0] for q, r in rows[name]["per_query"].items()} == {
            "q1": "d2",
            "q2": "d3",
            "q3": "doc 6/odd id",  # an id that is no file name still maps back
        }
    for row in rows.values():
        assert set(row["metrics"]) == {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map"}
        assert all(0.0 <= v <= 1.0 for v in row["metrics"].values())
        assert row["latency_ms"]["p95"] >= row["latency_ms"]["p50"] > 0
        assert set(row["per_query"]) == {"q1", "q2", "q3"}
        if row["name"] != "bm25-okapi":
            assert set(row["p_values"]) == set(report["metrics"])
    assert rows["default"]["params"]["rerank"] == report["settings"]["rerank"]
    assert rows["hybrid+graph"]["params"]["retrievers"] == ["dense", "lexical", "graph"]
    markdown = (out / "retrieval.md").read_text()
    assert "| setup | nDCG@10 |" in markdown and "| hybrid+graph |" in markdown
    assert (out / "retrieval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert markdown in stdout

    # a rerun with settings that only change querying reuses the index: nothing is embedded again
    index = Path(report["index"]["path"])
    manifest = (index / "manifest.json").read_text()
    env2 = env | {"KAG_RRF_K": "25", "KAG_WEIGHT_DENSE": "2"}
    code, _, stderr = run(
        env2,
        *args[:3],
        "--setups",
        "hybrid",
        "--split",
        "train",
        "--work-dir",
        str(work),
        "--out",
        str(tmp_path / "out2"),
        "--json",
    )
    assert code == 0, stderr
    assert "reusing the index" in stderr and "ingesting" not in stderr
    assert (index / "manifest.json").read_text() == manifest
    again = json.loads((tmp_path / "out2" / "retrieval.json").read_text())
    assert again["queries"] == 1 and again["setups"][0]["params"]["rrf_k"] == 25
    # the user's own data dir was never touched
    assert not Path(env["KAG_DATA_DIR"]).exists()

    # a setting that changes the index gets its own cached index
    code, _, stderr = run(
        env | {"KAG_CHUNK_SIZE": "32"},
        *args[:3],
        "--setups",
        "lexical",
        "--work-dir",
        str(work),
        "--out",
        str(tmp_path / "out3"),
    )
    assert code == 0, stderr
    assert "ingesting 6 documents" in stderr
    assert len(list(work.iterdir())) == 2

    # the fusion sweep over the same cached index
    code, stdout, stderr = run(
        env,
        "tune",
        "--dataset",
        str(data),
        "--split",
        "test",
        "--work-dir",
        str(work),
        "--out",
        str(tmp_path / "t"),
        "--rrf-k",
        "60",
        "--weight-dense",
        "0.5,1",
        "--weight-graph",
        "0,0.5",
        "--graph-hops",
        "1",
        "--depth-dense",
        "10",
        "--depth-lexical",
        "10",
        "--depth-graph",
        "10",
    )
    assert code == 0, stderr
    tune = json.loads((tmp_path / "t" / "tune.json").read_text())
    # rrf, score and zscore fusion, two dense weights, graph off or on (one hops, one depth): 3 x 2 x 2
    assert tune["configs"] == 12 and len(tune["rows"]) == 12
    assert {r["config"]["fusion"] for r in tune["rows"]} == {"rrf", "score", "zscore"}
    scores = [r["metrics"]["ndcg@10"] for r in tune["rows"]]
    assert scores == sorted(scores, reverse=True)
    assert "| rank | configuration | nDCG@10 | R@100 |" in stdout


@pytest.mark.slow
def test_answers_end_to_end(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "qa"
    (root / "beir").mkdir(parents=True)
    passages = [
        {
            "_id": "p0",
            "title": "Normans",
            "text": "The Normans gave their name to Normandy, a region in France. "
            "Their leader Rollo swore fealty to King Charles III.",
        },
        {"_id": "p1", "title": "Tides", "text": "Tides are caused by the gravity of the Moon and the Sun."},
    ]
    (root / "beir" / "corpus.jsonl").write_text("\n".join(json.dumps(p) for p in passages))
    text0, text1 = passages[0]["text"], passages[1]["text"]
    examples = [
        {
            "id": "a",
            "question": "In what country is Normandy located?",
            "is_impossible": False,
            "answers": ["France"],
            "answer_starts": [text0.index("France")],
            "gold_passage_id": "p0",
        },
        {
            "id": "b",
            "question": "What causes tides?",
            "is_impossible": False,
            "answers": ["the gravity of the Moon and the Sun"],
            "answer_starts": [text1.index("the gravity")],
            "gold_passage_id": "p1",
        },
        {
            "id": "c",
            "question": "What is the boiling point of mercury on Mars?",
            "is_impossible": True,
            "answers": [],
            "answer_starts": [],
            "gold_passage_id": "p1",
        },
    ]
    (root / "examples.jsonl").write_text("\n".join(json.dumps(e) for e in examples))
    work, out = tmp_path / "work", tmp_path / "out"
    # short answers from few sources keep the real model's share of the suite small
    quick = env | {"KAG_LLM_MAX_TOKENS": "40", "KAG_CONTEXT_CHUNKS": "2", "KAG_LLM_N_CTX": "1024"}
    code, stdout, stderr = run(
        quick, "answers", "--dataset", str(root / "examples.jsonl"), "--work-dir", str(work), "--out", str(out)
    )
    assert code == 0, stderr
    report = json.loads((out / "answers.json").read_text())
    assert report["questions"] == 3 and report["answerable"] == 2 and report["unanswerable"] == 1
    assert report["policy"] == "extractive"
    m = report["metrics"]
    for key in ("exact_match", "f1", "citation_precision", "citation_recall", "sentence_support_rate", "abstention"):
        assert key in m
    assert m["errors"] == 0 and m["questions_with_mapped_evidence"] == 2
    assert set(report["latency_ms"]) >= {"retrieve", "rerank", "generate", "verify", "total"}
    # gold evidence is mapped to document offsets: the document text there is the gold answer
    ledger = Ledger(f"sqlite:///{Path(report['index']['path']) / 'data' / 'ledger.sqlite3'}")
    try:
        for q in report["per_question"]:
            for span in q["evidence"]:
                doc = ledger.get_document(span["document_id"])
                assert doc.text[span["char_start"] : span["char_end"]] in q["gold_answers"]
            for c in q["citations"]:
                overlaps = any(
                    c["document_id"] == g["document_id"]
                    and max(c["char_start"], g["char_start"]) < min(c["char_end"], g["char_end"])
                    for g in q["evidence"]
                )
                assert c["on_gold"] == overlaps
            if q["abstained"]:
                assert q["prediction"] == "" and q["shown_sentences"] == 0
    finally:
        ledger.close()
    if m["sentence_support_rate"] is not None:
        assert m["sentence_support_rate"] == 1.0  # extractive: every shown sentence is supported
    assert (out / "answers.png").read_bytes()[:4] == b"\x89PNG"
    assert "| exact match (all) |" in (out / "answers.md").read_text()


@pytest.mark.parametrize(
    ("mutate", "args", "message"),
    [
        ("no-qrels", [], "has no relevance judgments (qrels/<split>.tsv)"),
        ("bad-queries", [], "queries.jsonl: malformed JSON on line 2"),
        ("bad-corpus", [], "corpus.jsonl: malformed JSON on line 3"),
        (None, ["--setups", "lexical,sparse"], "unknown setup 'sparse'"),
        (None, ["--setups", "hybrid:colbert"], "unknown reranker 'colbert'"),
        (None, ["--setups", "hybrid:cross-encoder"], "needs a local CrossEncoder model"),
        (None, ["--split", "dev"], "unknown split 'dev' for tiny (available splits: test, train)"),
        (None, ["--baseline", "dense", "--setups", "lexical"], "baseline 'dense' is not one of the setups run"),
    ],
)
def test_bad_retrieval_inputs_fail_clearly_before_any_work(
    env: dict[str, str], tmp_path: Path, mutate: str | None, args: list[str], message: str
) -> None:
    data = write_beir(tmp_path / "tiny", qrels=mutate != "no-qrels")
    if mutate == "bad-queries":
        (data / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": \n')
    if mutate == "bad-corpus":
        lines = (data / "corpus.jsonl").read_text().splitlines()
        lines[2] = lines[2][:-5]
        (data / "corpus.jsonl").write_text("\n".join(lines))
    work, out = tmp_path / "work", tmp_path / "out"
    code, stdout, stderr = run(
        env, "retrieval", "--dataset", str(data), "--work-dir", str(work), "--out", str(out), *args
    )
    assert code == 1
    assert stderr.startswith("Error: ") and message in " ".join(stderr.split()), stderr
    assert not work.exists() and not out.exists()  # nothing was ingested or written


def test_bad_answer_and_tune_inputs_fail_clearly(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"id": "a", "question": "q?", "answers": ["x"], "gold_passage_id": "p"}\nnot json\n')
    code, _, stderr = run(env, "answers", "--dataset", str(bad), "--work-dir", str(tmp_path / "w"))
    assert code == 1 and "qa.jsonl: malformed JSON on line 2" in " ".join(stderr.split())

    bad.write_text('{"id": "a", "question": "q?", "answers": ["x"], "gold_passage_id": "p"}\n')
    code, _, stderr = run(env, "answers", "--dataset", str(bad), "--work-dir", str(tmp_path / "w"))
    assert code == 1 and stderr.startswith("Error: no passages for")

    code, _, stderr = run(env, "answers", "--dataset", str(tmp_path / "missing.jsonl"))
    assert code == 1 and "is not a file" in stderr

    data = write_beir(tmp_path / "tiny")
    code, _, stderr = run(
        env, "tune", "--dataset", str(data), "--fusion", "rrf,borda", "--work-dir", str(tmp_path / "w")
    )
    assert code == 1 and "unknown fusion method(s) borda" in stderr
    code, _, stderr = run(env, "tune", "--dataset", str(data), "--rrf-k", "ten", "--work-dir", str(tmp_path / "w"))
    assert code == 1 and "--rrf-k takes comma-separated numbers" in stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_retrieval_writes_trec_runs_that_ranx_rescores_and_shows_index_progress(
    env: dict[str, str], tmp_path: Path
) -> None:
    from ranx import Qrels, Run, evaluate

    data = write_beir(tmp_path / "tiny")
    work, out = tmp_path / "work", tmp_path / "out"
    setups = "bm25-okapi,lexical,dense,hybrid"
    args = ["retrieval", "--dataset", str(data), "--setups", setups, "--work-dir", str(work), "--out", str(out)]
    code, stdout, stderr = run(env | {"COLUMNS": "160"}, *args, "--progress")
    assert code == 0, stderr
    # building the index draws the ingestion bar (one step per document file), then one bar per setup
    assert re.search(r"(?:ingesting|parsing|embedding|indexing) .*━ 6/6 files\s+\d+ chunks", stderr), stderr
    for name in setups.split(","):
        assert re.search(rf"{re.escape(name)} .*━ 3/3", stderr), name
    report = json.loads((out / "retrieval.json").read_text())
    qrels = Qrels.from_file(str(out / "runs" / "qrels.txt"), kind="trec")
    assert qrels.size == 3
    for row in report["setups"]:
        path = out / row["run_file"]
        assert path.parent == out / "runs" and path.suffix == ".trec"
        lines = path.read_text().splitlines()
        assert lines and all(len(line.split()) == 6 and line.split()[1] == "Q0" for line in lines)
        assert {line.split()[5] for line in lines} == {row["name"]}
        rescored = evaluate(qrels, Run.from_file(str(path), kind="trec"), "ndcg@10", make_comparable=True)
        assert rescored == pytest.approx(row["metrics"]["ndcg@10"]), row["name"]
        # the very number the table printed
        printed = rf"\| {re.escape(row['name'])} \| {row['metrics']['ndcg@10']:.3f}†? \|"
        assert re.search(printed, stdout.replace("**", "")), row["name"]
    lexical = (out / "runs" / "lexical.trec").read_text().splitlines()
    assert "doc%206/odd%20id" in {line.split()[2] for line in lexical if line.startswith("q3 ")}

    # without --progress and off a terminal, no bar is drawn
    code, _, stderr = run(env, *args[:3], "--setups", "lexical", "--work-dir", str(work), "--out", str(tmp_path / "o2"))
    assert code == 0, stderr
    assert "━" not in stderr and "reusing the index" in stderr
