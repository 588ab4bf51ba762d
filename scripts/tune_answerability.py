"""Fit the answerability model on one seeded SQuAD 2.0 sample, report it on others with a CI.

Each input is the `answers.json` (or the partial `answers.jsonl` log) of a `kag eval answers` run made
with KAG_ANSWER_MIN_ANSWERABLE=0: each verified answer's evidence signals (pipelines/answerability.py
FEATURES) were recorded. A run made under a fitted model (the shipped default) is re-decided: the
abstentions the model made are undone and decided again under the model given here (their answers were
not kept, so they count as not containing gold: contains-gold is then a lower bound). The decision
is made after verification and changes exactly one thing, whether a verified answer is shown or
abstains, so applying a fitted model to a recorded run is exact, not a simulation.

The logistic model is fitted on the tuning sample's verified answers (label: the question is
answerable); the threshold on its P(answerable) is the one with the best Youden's J (abstention
recall + answer rate - 1) on the tuning sample. Held-out samples are then scored once, with 95%
bootstrap intervals. `--probe-only` shows the old rule (a threshold on the probe alone) beside it.

Run:
  .venv/bin/python scripts/tune_answerability.py --tune OUT/seed1/answers.jsonl \
      --report OUT/seed2/answers.jsonl [more runs ...] [--write model.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.answerability import FEATURES, AnswerabilityModel, fit_logistic
from pipelines.multihop import plan

GRID = [round(x, 2) for x in np.arange(0.0, 0.96, 0.05)]


def load(path: Path) -> list[dict[str, Any]]:
    """Per-question records of an `answers.json` report, or of a (partial) `answers.jsonl` log."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()[1:] if line.strip()]
    else:
        rows = json.loads(path.read_text())["per_question"]
    return [q for q in rows if q.get("error") is None]


def _abstained_before(r: dict[str, Any]) -> bool:
    """Abstained before the evidence decision: a run made with a fitted model keeps its other abstentions; one
    the model made is undone and decided again (its answer was not kept, so it counts as not containing gold)."""
    return bool(r["abstained"]) and "the evidence gives" not in (r.get("reason") or "")


Decide = Callable[[dict[str, Any]], float]  # a record -> the score an abstention threshold applies to


def probe_score(r: dict[str, Any]) -> float:
    return r["p_answerable"] if r.get("p_answerable") is not None else 1.0


def model_score(model: AnswerabilityModel) -> Decide:
    def score(r: dict[str, Any]) -> float:
        features = (r.get("answerability") or {}).get("features")
        if not features or plan(r["question"]).kind != "single":
            return 1.0  # as the pipeline: a comparison or bridge question is recorded, not decided
        return model.probability(features)

    return score


def outcome(rows: list[dict[str, Any]], t: float, score: Decide) -> dict[str, float]:
    """Metrics when verified answers whose score is below t abstain (their answer is not shown)."""
    abstained = [_abstained_before(r) or score(r) < t for r in rows]
    has = [i for i, r in enumerate(rows) if not r["is_impossible"]]
    no = [i for i, r in enumerate(rows) if r["is_impossible"]]
    tp = sum(abstained[i] for i in no)
    predicted = sum(abstained)
    return {
        "abstention_recall": tp / len(no) if no else float("nan"),
        "abstention_precision": tp / predicted if predicted else float("nan"),
        "answer_rate": sum(not abstained[i] for i in has) / len(has) if has else float("nan"),
        "contains_gold": sum((not abstained[i]) and rows[i]["contains_gold"] for i in has) / len(has)
        if has
        else float("nan"),
        "n": len(rows),
        "impossible": len(no),
    }


def objective(m: dict[str, float]) -> float:
    # Youden's J: abstention recall (true positive rate) + answer rate on answerable questions (true
    # negative rate) - 1; ties go to the lower threshold (the earlier grid point)
    return m["abstention_recall"] + m["answer_rate"] - 1.0


def bootstrap(
    rows: list[dict[str, Any]], t: float, score: Decide, key: str, rounds: int = 2000, seed: int = 0
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        sample = [rows[i] for i in rng.integers(0, len(rows), len(rows))]
        value = outcome(sample, t, score)[key]
        if value == value:  # not NaN
            values.append(value)
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def sweep(rows: list[dict[str, Any]], score: Decide, label: str, floor: float | None) -> float:
    """The threshold with the highest abstention recall whose answer rate stays at or above `floor` (the
    issue's target: both at least 0.80; ties go to the lower threshold); with no floor, or none that keeps
    it, the best Youden's J."""
    print(f"\n{label}: threshold sweep on the tuning sample")
    print("| t | abstention recall | abstention precision | answer rate | contains gold |")
    print("|---|---|---|---|---|")
    best_t, best = 0.0, -1.0
    floor_t, floor_recall = None, -1.0
    for t in GRID:
        m = outcome(rows, t, score)
        print(
            f"| {t:.2f} | {m['abstention_recall']:.3f} | {m['abstention_precision']:.3f} | {m['answer_rate']:.3f} "
            f"| {m['contains_gold']:.3f} |"
        )
        if objective(m) > best + 1e-12:
            best_t, best = t, objective(m)
        if floor and m["answer_rate"] >= floor and m["abstention_recall"] > floor_recall + 1e-12:
            floor_t, floor_recall = t, m["abstention_recall"]
    if floor_t is not None:
        print(
            f"\nchosen threshold: {floor_t:.2f} (the highest abstention recall, {floor_recall:.3f}, with an answer "
            f"rate >= {floor:.2f} on the tuning sample; Youden's J would take {best_t:.2f})"
        )
        return floor_t
    print(f"\nchosen threshold: {best_t:.2f} (Youden's J = {best:.3f} on the tuning sample)")
    return best_t


def report(paths: list[Path], t: float, score: Decide, label: str) -> None:
    print(f"\n{label} at t = {t:.2f}, held out")
    print(
        "| sample | n | abstention recall (95% CI) | answer rate (95% CI) | contains gold (95% CI) | abst. precision |"
    )
    print("|---|---|---|---|---|---|")
    for path in paths:
        rows = load(path)
        m = outcome(rows, t, score)
        cells = []
        for key in ("abstention_recall", "answer_rate", "contains_gold"):
            low, high = bootstrap(rows, t, score, key)
            cells.append(f"{m[key]:.3f} ({low:.3f}-{high:.3f})")
        print(f"| {path.parent.name} | {len(rows)} | " + " | ".join(cells) + f" | {m['abstention_precision']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", type=Path, required=True, help="answers.json(l) of the tuning sample")
    parser.add_argument("--report", type=Path, nargs="*", default=[], help="answers.json(l) of held-out samples")
    parser.add_argument(
        "--answer-rate-floor",
        type=float,
        default=0.8,
        help="least answer rate on answerable tuning questions the threshold may cost (0: Youden's J alone)",
    )
    parser.add_argument("--l2", type=float, default=1.0, help="L2 penalty of the logistic fit")
    parser.add_argument("--probe-only", action="store_true", help="also sweep and report the probe alone")
    parser.add_argument("--write", type=Path, help="write the fitted model (with its threshold) as JSON here")
    args = parser.parse_args()
    tune = load(args.tune)
    verified = [r for r in tune if (r.get("answerability") or {}).get("features")]
    print(f"tuning sample: {args.tune} ({len(tune)} questions, {len(verified)} verified answers to fit on)")
    weights, bias, means, scales = fit_logistic(
        [r["answerability"]["features"] for r in verified], [not r["is_impossible"] for r in verified], l2=args.l2
    )
    print("\n| feature | weight (per standard deviation) | mean | sd |")
    print("|---|---:|---:|---:|")
    for name in FEATURES:
        print(f"| {name} | {weights[name]:+.3f} | {means[name]:.3f} | {scales[name]:.3f} |")
    print(f"| (bias) | {bias:+.3f} | | |")
    fitted = AnswerabilityModel(weights, bias, means, scales, threshold=0.0, fitted_on=args.tune.parent.name)
    t = sweep(tune, model_score(fitted), "answerability model", args.answer_rate_floor)
    fitted = dataclasses.replace(fitted, threshold=t)
    report(args.report, t, model_score(fitted), "answerability model")
    if args.probe_only:
        tp = sweep(tune, probe_score, "probe alone", args.answer_rate_floor)
        report(args.report, tp, probe_score, "probe alone")
    if args.write:
        args.write.write_text(json.dumps(fitted.to_dict(), indent=2) + "\n")
        print(f"\nwrote {args.write}")


if __name__ == "__main__":
    main()
