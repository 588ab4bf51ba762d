"""Tune the verify thresholds on SQuAD 2.0 dev: faithful vs perturbed answers, and abstention.

Run: .venv/bin/python scripts/tune_verify.py [--sample 400] [--lexical-weight 0.5]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from kag.models.embedder import SentenceTransformerEmbedder
from kag.records import SearchHit, Source
from pipelines.evaluation.datasets import evaldata
from pipelines.verify import Verifier, sentence_spans

DATA = evaldata("squad2_dev_5articles")
SUPPORT_GRID = [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80]
ABSTAIN_GRID = [0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60]


class CachingEmbedder:
    """Remembers vectors by text: passages recur across many questions."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def name(self) -> str:
        return self.inner.name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.embed(missing), strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


def source(number: int, pid: str, passage: dict) -> Source:
    text = passage["text"]
    hit = SearchHit(pid, 0.0, pid, "squad", passage["title"], "", text, 0, len(text), None, ())
    return Source(number, hit)


def perturb(answer: str, sentence: str, passage: str, others: list[str], rng: random.Random) -> tuple[str, str] | None:
    """(kind, replacement) for the answer: another number, or another named entity of the same article."""
    numbers = re.findall(r"\d+(?:[.,]\d+)*", answer)
    if numbers:
        old = numbers[0]
        value = float(old.replace(",", ""))
        for _ in range(20):
            delta = rng.choice([1, 2, 3, 5, 10]) * rng.choice([-1, 1])
            new = value + delta if value >= 10 else value + abs(delta)
            text = str(int(new)) if new == int(new) and "." not in old else f"{new:g}"
            if text not in passage:
                return "number", answer.replace(old, text, 1)
        return None
    if answer[:1].isupper():
        pool = [o for o in others if o[:1].isupper() and o.lower() not in passage.lower() and o != answer]
        if pool:
            return "entity", rng.choice(pool)
    return None


def build(sample: int, seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    passages = {p["_id"]: p for p in map(json.loads, (DATA / "beir" / "corpus.jsonl").open())}
    examples = [json.loads(line) for line in (DATA / "examples.jsonl").open()]
    by_title: dict[str, list[str]] = defaultdict(list)
    for pid in passages:
        # examples spell titles with underscores, the corpus with spaces; passage ids carry the former
        by_title[pid.rsplit("__", 1)[0]].append(pid)
    answers_by_title: dict[str, list[str]] = defaultdict(list)
    for ex in examples:
        if ex["answers"]:
            answers_by_title[ex["title"]].append(ex["answers"][0])

    cases = []
    answerable = [ex for ex in examples if not ex["is_impossible"]]
    rng.shuffle(answerable)
    for ex in answerable:
        if len(cases) >= sample:
            break
        pid, answer, start = ex["gold_passage_id"], ex["answers"][0], ex["answer_starts"][0]
        text = passages[pid]["text"]
        if text[start : start + len(answer)] != answer:
            continue
        span = next(((s, e) for s, e in sentence_spans(text) if s <= start and start + len(answer) <= e), None)
        if span is None:
            continue
        sentence = text[span[0] : span[1]]
        swapped = perturb(answer, sentence, text, answers_by_title[ex["title"]], rng)
        if swapped is None:
            continue
        kind, replacement = swapped
        rel = start - span[0]
        unfaithful = sentence[:rel] + replacement + sentence[rel + len(answer) :]
        # the gold passage among two distractors of the same article, at a random position
        distractors = rng.sample([p for p in by_title[ex["title"]] if p != pid], 2)
        order = [pid, *distractors]
        rng.shuffle(order)
        sources = [source(i + 1, p, passages[p]) for i, p in enumerate(order)]
        gold = order.index(pid) + 1
        other_titles = [t for t in by_title if t != ex["title"]]
        off_topic = rng.choice(by_title[rng.choice(other_titles)])
        cases.append(
            {
                "question": ex["question"],
                "sources": sources,
                "faithful": f"{sentence} [{gold}]",
                "terse": f"{answer} [{gold}].",
                "unfaithful": f"{unfaithful} [{gold}]",
                "kind": kind,
                "off_topic": [source(1, off_topic, passages[off_topic])],
            }
        )
    asked = [
        {"question": ex["question"], "impossible": ex["is_impossible"], "sources": [source(1, p, passages[p])]}
        for ex in examples
        for p in [ex["gold_passage_id"]]
    ]
    return cases, asked


def sentence_score(verifier: Verifier, question: str, answer: str, sources: list[Source]) -> float:
    """The weakest sentence's alignment score: the answer is supported only if every sentence is."""
    result = verifier.verify(question, answer, sources)
    return min((v.score for v in result.sentences), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=400, help="answerable questions with a swappable answer")
    parser.add_argument("--lexical-weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    t0 = time.perf_counter()
    cases, asked = build(args.sample, args.seed)
    embedder = CachingEmbedder(SentenceTransformerEmbedder())
    # thresholds 0 and policy `flag` keep every score visible; the grid is applied afterwards
    verifier = Verifier(
        embedder, policy="flag", support_threshold=0.0, abstain_threshold=0.0, lexical_weight=args.lexical_weight
    )
    faithful = np.array([sentence_score(verifier, c["question"], c["faithful"], c["sources"]) for c in cases])
    terse = np.array([sentence_score(verifier, c["question"], c["terse"], c["sources"]) for c in cases])
    unfaithful = np.array([sentence_score(verifier, c["question"], c["unfaithful"], c["sources"]) for c in cases])
    kinds = np.array([c["kind"] for c in cases])
    evidence = np.array([verifier.evidence(a["question"], a["sources"]) for a in asked])
    impossible = np.array([a["impossible"] for a in asked])
    off_topic = np.array([verifier.evidence(c["question"], c["off_topic"]) for c in cases])
    elapsed = time.perf_counter() - t0

    n_num, n_ent = int((kinds == "number").sum()), int((kinds == "entity").sum())
    print(
        f"lexical_weight={args.lexical_weight}  answerable cases={len(cases)} (number swaps {n_num}, "
        f"entity swaps {n_ent})  questions for abstention={len(asked)} ({int(impossible.sum())} unanswerable)"
        f"  [{elapsed:.0f} s]\n"
    )
    print("support_threshold | faithful supported | terse supported | number swap rejected | entity swap rejected")
    print("---|---|---|---|---")
    for t in SUPPORT_GRID:
        print(
            f"{t:.2f} | {np.mean(faithful >= t):.3f} | {np.mean(terse >= t):.3f} | "
            f"{np.mean(unfaithful[kinds == 'number'] < t):.3f} | {np.mean(unfaithful[kinds == 'entity'] < t):.3f}"
        )
    print(
        "\nabstain_threshold | abstain P (unanswerable) | abstain R (unanswerable) | "
        "answerable abstained | off-topic abstained"
    )
    print("---|---|---|---|---")
    for t in ABSTAIN_GRID:
        abstain = evidence < t
        precision = (abstain & impossible).sum() / max(abstain.sum(), 1)
        recall = (abstain & impossible).sum() / max(impossible.sum(), 1)
        print(
            f"{t:.2f} | {precision:.3f} | {recall:.3f} | {np.mean(abstain[~impossible]):.3f} | "
            f"{np.mean(off_topic < t):.3f}"
        )
    pct = [5, 25, 50, 75, 95]
    print("\nscore percentiles", pct)
    for name, values in (
        ("faithful", faithful),
        ("terse", terse),
        ("number swap", unfaithful[kinds == "number"]),
        ("entity swap", unfaithful[kinds == "entity"]),
        ("evidence answerable", evidence[~impossible]),
        ("evidence unanswerable", evidence[impossible]),
        ("evidence off-topic", off_topic),
    ):
        print(f"  {name:22s}", " ".join(f"{v:.3f}" for v in np.percentile(values, pct)))


if __name__ == "__main__":
    main()
