"""Embedding runtimes (`make bench`): torch vs the ONNX export of the same model, for one query,
for two encoders side by side (what the hybrid retriever does), and for a bulk batch of chunks.
Prints one markdown table; the variants are interleaved call by call, so the ratios are the
figures to compare on a shared machine.

    .venv/bin/python scripts/bench_embed.py [--rounds 200] [--scifact DIR (default $EVALDATA/scifact)]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bench_ingest import header, log, percentile, read_jsonl, table  # noqa: E402

FALLBACK_QUERIES = [
    "What causes the seasons on Earth?",
    "How many days of paid time off do full-time employees accrue per month?",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "Which database does the Heron billing service depend on?",
]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="timed calls per variant")
    parser.add_argument("--scifact", type=Path, default=None, help="queries and abstracts (default $EVALDATA/scifact)")
    parser.add_argument("--bulk", type=int, default=128, help="abstracts in the bulk row")
    args = parser.parse_args(argv)

    import torch

    from kag.models.embedder import SentenceTransformerEmbedder

    queries, abstracts = list(FALLBACK_QUERIES), [q * 12 for q in FALLBACK_QUERIES]
    scifact = args.scifact
    if scifact is None and os.environ.get("EVALDATA"):
        scifact = Path(os.environ["EVALDATA"]) / "scifact"
    if scifact is not None and (scifact / "queries.jsonl").is_file():
        queries = [q["text"] for q in read_jsonl(scifact / "queries.jsonl")]
        abstracts = [
            f"{r.get('title', '')}\n\n{r.get('text', '')}" for r in read_jsonl(scifact / "corpus.jsonl", limit=2000)
        ]
    abstracts = (abstracts * (args.bulk // len(abstracts) + 1))[: args.bulk]

    print(header(torch.get_num_threads()) + "\n")
    with tempfile.TemporaryDirectory(prefix="kag-bench-embed-") as cache:
        variants = {
            "torch": SentenceTransformerEmbedder(runtime="torch"),
            "onnx, 1 thread (shipped)": SentenceTransformerEmbedder(runtime="onnx", onnx_cache_dir=cache),
            "onnx, 2 threads": SentenceTransformerEmbedder(runtime="onnx", onnx_cache_dir=cache, onnx_threads=2),
        }
        for name, model in variants.items():
            model.warm_up()
            log(f"{name}: short texts on {model.runtime_used}")
        pool = ThreadPoolExecutor(2)

        def one(model: SentenceTransformerEmbedder, i: int) -> None:
            model.embed([queries[i % len(queries)]])

        def pair(model: SentenceTransformerEmbedder, i: int) -> None:
            # the query on one thread, three entity names on another, as dense and graph retrieval do
            words = queries[(i + 1) % len(queries)].split()
            names = [" ".join(words[j : j + 2]) for j in range(0, min(len(words), 6), 2)] or ["x"]
            futures = [pool.submit(model.embed, [queries[i % len(queries)]]), pool.submit(model.embed, names)]
            for f in futures:
                f.result()

        def bulk(model: SentenceTransformerEmbedder, i: int) -> None:
            model.embed(abstracts)  # more than onnx_max_texts: torch for every variant, as at ingestion

        rows = []
        cases: list[tuple[str, Callable[[SentenceTransformerEmbedder, int], None], int]] = [
            ("one query", one, args.rounds),
            ("query + entity names side by side (2 threads)", pair, args.rounds),
            (f"bulk: {args.bulk} abstracts (torch in every variant)", bulk, 3),
        ]
        for label, call, rounds in cases:
            for model in variants.values():
                call(model, 0)  # warm
            times: dict[str, list[float]] = {name: [] for name in variants}
            for i in range(rounds):
                for name, model in variants.items():
                    t = time.perf_counter()
                    call(model, i)
                    times[name].append((time.perf_counter() - t) * 1000)
            base = percentile(times["torch"], 50)
            for name, values in times.items():
                p50 = percentile(values, 50)
                rows.append(
                    [label, name, f"{p50:.1f}", f"{percentile(values, 95):.1f}", f"{base / p50:.2f}x" if p50 else "-"]
                )
        pool.shutdown()
        print(
            f"### Embedding runtimes ({args.rounds} calls per variant, interleaved)\n\n"
            + table(["call", "runtime", "p50 ms", "p95 ms", "speed vs torch (p50)"], rows)
            + "\n"
        )


if __name__ == "__main__":
    main()
