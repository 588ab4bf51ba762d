"""Tune the answerability threshold on one seeded SQuAD 2.0 sample, report it on others with a CI.

Each input is the `answers.json` of a `kag eval answers` run made with KAG_ANSWER_MIN_ANSWERABLE=0,
so every question was answered and its probe value recorded: a threshold t then changes exactly one
thing, whether questions with P(answerable) < t abstain. The sweep is therefore exact, not a model.

Run:
  .venv/bin/python scripts/tune_answerability.py --tune eval-results/squad-seed1/answers.json \
      --report eval-results/squad-seed7/answers.json [more runs ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

GRID = [round(x, 2) for x in np.arange(0.0, 0.96, 0.05)]


def load(path: Path) -> list[dict[str, Any]]:
    """Per-question records of an `answers.json` report, or of a (partial) `answers.jsonl` log."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()[1:] if line.strip()]
    else:
        rows = json.loads(path.read_text())["per_question"]
    return [q for q in rows if q.get("error") is None]


def outcome(rows: list[dict[str, Any]], t: float) -> dict[str, float]:
    """Metrics when questions with P(answerable) < t abstain (their answer is not shown)."""
    abstained = [r["abstained"] or (r.get("p_answerable") is not None and r["p_answerable"] < t) for r in rows]
    impossible = [r["is_impossible"] for r in rows]
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
        "impossible": sum(impossible),
    }


def objective(m: dict[str, float]) -> float:
    # Youden's J: abstention recall (true positive rate) + answer rate on answerable questions (true
    # negative rate) - 1; ties go to the lower threshold (the earlier grid point)
    return m["abstention_recall"] + m["answer_rate"] - 1.0


def bootstrap(rows: list[dict[str, Any]], t: float, key: str, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        sample = [rows[i] for i in rng.integers(0, len(rows), len(rows))]
        value = outcome(sample, t)[key]
        if value == value:  # not NaN
            values.append(value)
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", type=Path, required=True, help="answers.json of the tuning sample")
    parser.add_argument("--report", type=Path, nargs="*", default=[], help="answers.json of held-out samples")
    args = parser.parse_args()
    tune = load(args.tune)
    print(f"tuning sample: {args.tune} ({len(tune)} questions)")
    print("| t | abstention recall | abstention precision | answer rate | contains gold |")
    print("|---|---|---|---|---|")
    best_t, best = 0.0, -1.0
    for t in GRID:
        m = outcome(tune, t)
        print(
            f"| {t:.2f} | {m['abstention_recall']:.3f} | {m['abstention_precision']:.3f} | {m['answer_rate']:.3f} "
            f"| {m['contains_gold']:.3f} |"
        )
        if objective(m) > best:
            best_t, best = t, objective(m)
    print(f"\nchosen threshold: {best_t:.2f} (Youden's J = {best:.3f} on the tuning sample)\n")
    if args.report:
        print("| held-out sample | n | abstention recall (95% CI) | answer rate (95% CI) | contains gold (95% CI) |")
        print("|---|---|---|---|---|")
        for path in args.report:
            rows = load(path)
            m = outcome(rows, best_t)
            cells = []
            for key in ("abstention_recall", "answer_rate", "contains_gold"):
                low, high = bootstrap(rows, best_t, key)
                cells.append(f"{m[key]:.3f} ({low:.3f}-{high:.3f})")
            print(f"| {path.parent.name} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
