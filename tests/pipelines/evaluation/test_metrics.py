"""Ranking metrics from ranx against values worked out by hand, and the answer metrics on hand-made cases."""

from __future__ import annotations

from math import log2

import pytest

from pipelines.evaluation.metrics import (
    best_over_golds,
    compare_runs,
    evaluate_run,
    exact_match,
    normalize_answer,
    precision_recall,
    spans_overlap,
    token_f1,
)

# q1 has three relevant documents (d5 is never retrieved); q2 has graded judgments
QRELS = {"q1": {"d1": 1, "d3": 1, "d5": 1}, "q2": {"d2": 2, "d4": 1}}
RUN = {
    "q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0},  # relevant at ranks 1 and 3
    "q2": {"d6": 3.0, "d2": 2.0, "d4": 1.0},  # gain 2 at rank 2, gain 1 at rank 3
}


def test_ranx_values_equal_the_hand_computed_ones() -> None:
    # nDCG with linear gain (trec_eval, BEIR): DCG = sum rel_i / log2(i + 1)
    dcg_q1 = 1 / log2(2) + 1 / log2(4)
    idcg_q1 = 1 / log2(2) + 1 / log2(3) + 1 / log2(4)
    dcg_q2 = 2 / log2(3) + 1 / log2(4)
    idcg_q2 = 2 / log2(2) + 1 / log2(3)
    ndcg = {"q1": dcg_q1 / idcg_q1, "q2": dcg_q2 / idcg_q2}
    recall = {"q1": 2 / 3, "q2": 1.0}
    mrr = {"q1": 1.0, "q2": 1 / 2}
    # AP: mean over the relevant documents of precision at their rank; unretrieved ones count 0
    ap = {"q1": (1 / 1 + 2 / 3) / 3, "q2": (1 / 2 + 2 / 3) / 2}

    means, per_query = evaluate_run(QRELS, RUN)

    assert ndcg["q1"] == pytest.approx(0.703918, abs=1e-6)  # the hand arithmetic itself, spelled out
    for metric, expected in (
        ("ndcg@10", ndcg),
        ("recall@10", recall),
        ("recall@100", recall),
        ("mrr@10", mrr),
        ("map", ap),
    ):
        assert per_query[metric] == pytest.approx(expected), metric
        assert means[metric] == pytest.approx(sum(expected.values()) / 2), metric


def test_a_query_the_run_misses_scores_zero_and_counts_in_the_mean() -> None:
    means, per_query = evaluate_run({**QRELS, "q3": {"d9": 1}}, {**RUN, "q3": {}})
    assert per_query["ndcg@10"]["q3"] == 0.0
    assert means["recall@10"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_cutoffs_apply() -> None:
    deep = {"q1": {f"x{i}": 100.0 - i for i in range(12)} | {"d1": 1.0}}  # d1 at rank 13
    means, _ = evaluate_run({"q1": {"d1": 1}}, deep)
    assert means["recall@10"] == 0.0
    assert means["recall@100"] == 1.0
    assert means["mrr@10"] == 0.0
    assert means["map"] == pytest.approx(1 / 13)


def test_paired_test_against_the_baseline() -> None:
    qrels = {f"q{i}": {"good": 1} for i in range(20)}
    strong = {q: {"good": 2.0, "bad": 1.0} for q in qrels}
    weak = {q: {"bad": 2.0, "good": 1.0} for q in qrels}
    p = compare_runs(qrels, {"weak": weak, "strong": strong, "same": dict(weak)}, "weak", ["ndcg@10"])
    assert set(p) == {"strong", "same"}
    assert p["strong"]["ndcg@10"] < 0.01
    assert p["same"]["ndcg@10"] > 0.5


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple and a pear") == "apple and pear"


@pytest.mark.parametrize(
    ("prediction", "gold", "em", "f1"),
    [
        ("France", "France", 1.0, 1.0),
        ("in France.", "France", 0.0, 2 * (1 / 2) * 1 / (1 / 2 + 1)),  # P = 1/2, R = 1 -> F1 = 2/3
        ("the 10th century", "10th and 11th centuries", 0.0, 2 * (1 / 2) * (1 / 4) / (1 / 2 + 1 / 4)),
        ("Paris", "France", 0.0, 0.0),
        ("", "", 1.0, 1.0),  # an unanswerable question answered with nothing
        ("France", "", 0.0, 0.0),
    ],
)
def test_exact_match_and_f1(prediction: str, gold: str, em: float, f1: float) -> None:
    assert exact_match(prediction, gold) == em
    assert token_f1(prediction, gold) == pytest.approx(f1)


def test_best_gold_wins_and_no_gold_means_the_empty_answer() -> None:
    assert best_over_golds("10th century", ["the first half of the 10th century", "10th century"]) == (1.0, 1.0)
    assert best_over_golds("", []) == (1.0, 1.0)
    assert best_over_golds("Rollo", []) == (0.0, 0.0)


def test_abstention_precision_recall() -> None:
    abstained = [True, True, False, False, True]
    impossible = [True, False, True, False, True]
    pr = precision_recall(abstained, impossible)
    assert pr["precision"] == pytest.approx(2 / 3)
    assert pr["recall"] == pytest.approx(2 / 3)
    assert pr["f1"] == pytest.approx(2 / 3)
    assert precision_recall([False, False], [True, False])["precision"] is None  # nothing abstained: n/a


def test_span_overlap_is_half_open() -> None:
    assert spans_overlap(0, 5, 4, 9)
    assert not spans_overlap(0, 5, 5, 9)
    assert spans_overlap(10, 20, 12, 13)
