"""TREC run and qrels files: other tools read back exactly the ranking kag scored."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.evaluation.metrics import evaluate_run
from pipelines.evaluation.retrieval import SetupResult
from pipelines.evaluation.trec import run_file_name, trec_id, write_qrels, write_run

QRELS = {"q1": {"d2": 1, "doc 6/odd id": 2}, "q 2": {"d3": 1}, "q3": {"d9": 1}}


def setup_result() -> SetupResult:
    result = SetupResult("hybrid:llm", {})
    # q3 found nothing: a run file has no line for it, and every scorer counts it as 0
    result.rankings = {"q1": ["d1", "doc 6/odd id", "d2"], "q 2": ["d3", "d%4"], "q3": []}
    return result


def test_run_lines_have_the_trec_layout_with_encoded_ids(tmp_path: Path) -> None:
    path = tmp_path / run_file_name("hybrid:llm")
    assert path.name == "hybrid-llm.trec" and run_file_name("hybrid+graph") == "hybrid+graph.trec"
    assert write_run(path, setup_result().run, tag="hybrid:llm") == 5
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 1.0 hybrid:llm"
    assert lines[1] == "q1 Q0 doc%206/odd%20id 2 0.5 hybrid:llm"
    assert lines[3].startswith("q%202 Q0 d3 1 1.0 ") and lines[4].startswith("q%202 Q0 d%254 2 0.5 ")
    assert all(len(line.split()) == 6 for line in lines)
    assert trec_id("a\tb") == "a%09b"


def test_ranx_and_pytrec_eval_rescore_the_files_to_kags_numbers(tmp_path: Path) -> None:
    import pytrec_eval
    from ranx import Qrels, Run, evaluate

    result = setup_result()
    means, per_query = evaluate_run(QRELS, result.run, ["ndcg@10", "recall@10", "mrr@10"], name=result.name)
    write_run(tmp_path / "run.trec", result.run, tag=result.name)
    write_qrels(tmp_path / "qrels.txt", QRELS)

    qrels = Qrels.from_file(str(tmp_path / "qrels.txt"), kind="trec")
    run = Run.from_file(str(tmp_path / "run.trec"), kind="trec")
    again = evaluate(qrels, run, ["ndcg@10", "recall@10", "mrr@10"], make_comparable=True)
    assert again == pytest.approx(means)
    assert means["ndcg@10"] > 0

    # an independent implementation (trec_eval's C code), averaged over every judged query as trec_eval -c does
    def read(path: Path, columns: tuple[int, int, int]) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for line in path.read_text().splitlines():
            cells = line.split()
            table.setdefault(cells[columns[0]], {})[cells[columns[1]]] = float(cells[columns[2]])
        return table

    judged = {q: {d: int(v) for d, v in docs.items()} for q, docs in read(tmp_path / "qrels.txt", (0, 2, 3)).items()}
    scored = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10"}).evaluate(read(tmp_path / "run.trec", (0, 2, 4)))
    ndcg = {q: scored.get(q, {}).get("ndcg_cut_10", 0.0) for q in judged}
    assert sum(ndcg.values()) / len(judged) == pytest.approx(means["ndcg@10"])
    kag_per_query = {q.replace(" ", "%20"): v for q, v in per_query["ndcg@10"].items()}
    assert ndcg == pytest.approx({q: kag_per_query.get(q, 0.0) for q in judged})
