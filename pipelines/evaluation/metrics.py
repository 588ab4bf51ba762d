"""Metrics: ranking metrics and paired significance tests from ranx; SQuAD answer metrics; citation,
support and abstention rates over answer results."""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from kag.errors import MissingDependencyError

RETRIEVAL_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map")
STAT_TESTS = ("student", "fisher")

Run = Mapping[str, Mapping[str, float]]
QrelsDict = Mapping[str, Mapping[str, int]]


def _ranx() -> Any:
    try:
        import ranx
    except ImportError as exc:
        raise MissingDependencyError("ranx is not installed", hint="pip install 'kag[eval]'") from exc
    return ranx


def _ranx_pair(qrels: QrelsDict, run: Run, name: str) -> tuple[Any, Any]:
    ranx = _ranx()
    # ranx rejects an empty ranking: a query without results is added back as all-zero by make_comparable
    return ranx.Qrels({q: dict(d) for q, d in qrels.items()}), ranx.Run(
        {q: dict(d) for q, d in run.items() if d}, name=name
    )


def evaluate_run(
    qrels: QrelsDict, run: Run, metrics: Sequence[str] = RETRIEVAL_METRICS, *, name: str = "run"
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean of each metric, metric -> query -> value) over every judged query; a query the run
    misses scores 0. nDCG uses trec_eval's linear gain, as BEIR does."""
    ranx = _ranx()
    ranx_qrels, ranx_run = _ranx_pair(qrels, run, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's type-safety chatter
        means = ranx.evaluate(ranx_qrels, ranx_run, list(metrics), make_comparable=True)
    if isinstance(means, float):
        means = {metrics[0]: means}
    per_query = {m: {q: float(v) for q, v in ranx_run.scores[m].items()} for m in metrics}
    return {m: float(v) for m, v in means.items()}, per_query


def compare_runs(
    qrels: QrelsDict,
    runs: Mapping[str, Run],
    baseline: str,
    metrics: Sequence[str] = RETRIEVAL_METRICS,
    *,
    stat_test: str = "student",
    seed: int = 42,
) -> dict[str, dict[str, float]]:
    """Two-sided paired p-value of each run against the baseline, per metric (ranx `compare`)."""
    ranx = _ranx()
    names = list(runs)
    if baseline not in runs or len(names) < 2:
        return {}
    ranx_qrels = ranx.Qrels({q: dict(d) for q, d in qrels.items()})
    ranx_runs = [ranx.Run({q: dict(d) for q, d in runs[n].items() if d}, name=n) for n in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ranx.compare(
            ranx_qrels, ranx_runs, list(metrics), stat_test=stat_test, random_seed=seed, make_comparable=True
        )
    data = report.to_dict()
    # identical per-query scores make the t statistic 0/0: no evidence of a difference, p = 1
    return {
        n: {m: 1.0 if math.isnan(float(p)) else float(p) for m, p in data[baseline]["comparisons"][n].items()}
        for n in names
        if n != baseline
    }


# ---------------------------------------------------------------------------------------------
# answers: SQuAD v2.0 official normalisation and scores


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1; an empty side scores 1 only when both are empty (SQuAD v2.0)."""
    pred, ref = _tokens(prediction), _tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) against the best-matching gold answer; no gold answer means the empty answer is right."""
    references = list(golds) or [""]
    return (
        max(exact_match(prediction, g) for g in references),
        max(token_f1(prediction, g) for g in references),
    )


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when there is nothing to divide (reported as n/a)."""
    return numerator / denominator if denominator else None


def precision_recall(predicted: Sequence[bool], actual: Sequence[bool]) -> dict[str, float | None]:
    """Precision, recall and F1 of a binary decision (e.g. abstained vs unanswerable)."""
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    precision, recall = ratio(tp, sum(predicted)), ratio(tp, sum(actual))
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else None
    )
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "predicted": sum(predicted),
        "actual": sum(actual),
    }


def spans_overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """Whether [a_start, a_end) and [b_start, b_end) share at least one character."""
    return max(a_start, b_start) < min(a_end, b_end)
