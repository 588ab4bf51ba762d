"""How often the question-terms check fires, with the sources the answer pipeline would give the
model, on the SQuAD 2.0 questions outside the held-out sample of `kag eval answers --sample 30
--seed 0`. No model is run: retrieval, rerank and the prompt's source selection only.

    EVALDATA=... .venv/bin/python scripts/tune_question_terms.py [--held-out 30] [--seed 0] [--show 12]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", type=int, default=30, help="size of the held-out sample left out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out sample")
    parser.add_argument("--show", type=int, default=12, help="answerable questions it fires on to print")
    args = parser.parse_args()

    from kag.cli.eval import open_workspace
    from kag.settings import Settings
    from pipelines.evaluation.datasets import evaldata, load_answer_dataset
    from pipelines.evaluation.workspace import COLLECTION, default_work_dir
    from pipelines.generate import build_answer_prompt
    from pipelines.retrieve import hydrate
    from pipelines.verify import unseen_question_terms

    data = load_answer_dataset(evaldata("squad2_dev_5articles") / "examples.jsonl")
    held = {e.id for e in data.sample(sample=args.held_out, seed=args.seed)}
    examples = [e for e in data.examples if e.id not in held]
    rt, _ = open_workspace(
        Settings(),
        default_work_dir(),
        f"{data.name}-passages",
        data.passages_sha256(),
        lambda: list(data.passages.values()),
    )
    try:
        p = rt.answer_pipeline
        fired = {True: 0, False: 0}
        total = {True: 0, False: 0}
        shown = 0
        for e in examples:
            fused, _ = p.retriever.retrieve_traced(e.question, p.rerank_depth, [COLLECTION], None)
            reranked = p.rerank.run(e.question, hydrate(p.ledger, fused), p.context_chunks)
            parts = build_answer_prompt(
                e.question,
                reranked,
                count_tokens=p.generator.count_tokens,
                budget_tokens=p.generator.prompt_budget(p.sampling.max_tokens),
            )
            unseen = unseen_question_terms(
                e.question, [t for s in parts.sources for t in (s.hit.text, s.hit.title or "")]
            )
            total[e.is_impossible] += 1
            fired[e.is_impossible] += bool(unseen)
            if unseen and not e.is_impossible and shown < args.show:
                shown += 1
                print(f"fires on an answerable question: {e.question!r} -> {unseen}")
        print("\n| questions | count | check fires | rate |\n|---|---:|---:|---:|")
        for impossible in (True, False):
            label = "unanswerable" if impossible else "answerable"
            print(
                f"| {label} | {total[impossible]} | {fired[impossible]} | {fired[impossible] / total[impossible]:.3f} |"
            )
    finally:
        rt.close()


if __name__ == "__main__":
    main()
