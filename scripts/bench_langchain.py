"""kag ingestion against the plain LangChain recipe on the same files and model (`make bench`).

The recipe: `DirectoryLoader` + `TextLoader` over the same `.txt` files, `RecursiveCharacterTextSplitter`
cut by the same tokenizer to kag's chunk budget (200 tokens, 32 overlap), `HuggingFaceEmbeddings` on
the same bundled all-MiniLM-L6-v2 folder (normalized, batch 64), `QdrantVectorStore` in local mode
(`location=":memory:"`) and a `BM25Retriever`: a dense + BM25 index like kag's, without its ledger,
exact offsets, crash safety or graph. kag runs as `kag ingest` does, into a fresh embedded data dir,
with the graph off and on; "embedding only" is kag's embedder on kag's chunk texts, nothing else.
Every variant runs once per round in one process, the order rotating between rounds, and the
ratios are medians of per-round ratios (absolute times drift on shared machines).

    EVALDATA=... .venv/bin/python scripts/bench_langchain.py [--limit 1000] [--rounds 3]

Needs the `bench` extra (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from bench_ingest import (  # noqa: E402  (also sets the offline switches)
    COLLECTION,
    _settings,
    header,
    ledger_chunk_batches,
    log,
    read_jsonl,
    run_embed_only,
    run_pipeline,
    table,
    write_corpus,
)

VARIANTS = ("langchain", "kag graph off", "kag graph on", "kag embedding only")
# ratio, numerator, denominator, target
TARGETS = (
    ("kag graph on / LangChain", "kag graph on", "langchain", 1.5),
    ("kag graph off / LangChain", "kag graph off", "langchain", 2.5),
    ("kag graph on / kag embedding only", "kag graph on", "kag embedding only", 0.75),
)


class LangChainRecipe:
    """The recipe's models, loaded once outside every timing, as a user would keep them between runs."""

    def __init__(self, model_path: str, chunk_size: int, chunk_overlap: int, batch_size: int) -> None:
        try:
            from langchain_huggingface import HuggingFaceEmbeddings
            from langchain_text_splitters import RecursiveCharacterTextSplitter
        except ImportError as exc:
            raise SystemExit(f"bench_langchain needs the bench extra: pip install -e '.[bench]' ({exc})") from exc
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer, chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
        self.embeddings = HuggingFaceEmbeddings(
            model_name=model_path,
            model_kwargs={"device": "cpu", "local_files_only": True},
            encode_kwargs={"normalize_embeddings": True, "batch_size": batch_size},
        )
        self.embeddings.embed_documents(["warm-up"])

    def run(self, docs_dir: Path) -> dict[str, Any]:
        from langchain_community.document_loaders import DirectoryLoader, TextLoader
        from langchain_community.retrievers import BM25Retriever
        from langchain_qdrant import QdrantVectorStore

        started = time.perf_counter()
        docs = DirectoryLoader(
            str(docs_dir), glob="*.txt", loader_cls=TextLoader, loader_kwargs={"encoding": "utf-8"}
        ).load()
        chunks = self.splitter.split_documents(docs)
        store = QdrantVectorStore.from_documents(chunks, self.embeddings, location=":memory:", collection_name="bench")
        bm25 = BM25Retriever.from_documents(chunks)
        wall = time.perf_counter() - started
        assert store.similarity_search("cancer", k=1) and bm25.invoke("cancer")  # both indexes answer
        return {"documents": len(docs), "chunks": len(chunks), "seconds": wall, "docs_per_s": len(docs) / wall}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="BEIR corpus.jsonl (default $EVALDATA/scifact)")
    parser.add_argument("--limit", type=int, default=1000, help="documents (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; every variant runs once per round")
    args = parser.parse_args(argv)
    if args.corpus is None:
        from pipelines.evaluation.datasets import evaldata

        args.corpus = evaldata("scifact") / "corpus.jsonl"

    import torch

    from kag.cli.runtime import Runtime

    work = Path(tempfile.mkdtemp(prefix="kag-bench-langchain-"))
    try:
        rows = read_jsonl(args.corpus, args.limit)
        docs_dir = work / "corpus"
        write_corpus(rows, docs_dir)
        warm_dir = work / "warmup"
        write_corpus(rows[:16], warm_dir)
        models = Runtime(_settings(work / "models-unused", True))
        s = models.settings
        embedder, _, _ = models.embedder, models.extractor, models.name_embedder  # loaded outside the timings
        recipe = LangChainRecipe(embedder.model_path, s.chunk_size, s.chunk_overlap, s.embedding_batch_size)
        run_pipeline(warm_dir, work / "data-warmup", True, models)
        recipe.run(warm_dir)
        batches: list[list[str]] | None = None
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for rnd in range(args.rounds):
            order = list(VARIANTS[rnd % len(VARIANTS) :] + VARIANTS[: rnd % len(VARIANTS)])
            if batches is None:  # embedding-only needs kag's chunks: after a kag run
                order.remove("kag embedding only")
                order.append("kag embedding only")
            for variant in order:
                if variant == "langchain":
                    result = recipe.run(docs_dir)
                elif variant == "kag embedding only":
                    assert batches is not None
                    result, _ = run_embed_only(batches, embedder)
                    result["docs_per_s"] = len(rows) / result["seconds"]
                else:
                    data_dir = work / f"data-{rnd}-{variant.replace(' ', '-')}"
                    result = run_pipeline(docs_dir, data_dir, variant == "kag graph on", models)
                    if batches is None:
                        batches = ledger_chunk_batches(data_dir, models, s.index_batch_size)
                    shutil.rmtree(data_dir, ignore_errors=True)
                runs[variant].append(result)
                log(f"langchain bench round {rnd + 1}/{args.rounds}: {variant:<20} {result['docs_per_s']:.1f} docs/s")
        models.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[variant])

    print(header(torch.get_num_threads()) + "\n")
    print(
        f"### Ingestion vs the plain LangChain recipe ({len(rows)} SciFact abstracts, {args.rounds} rounds, "
        f"kag: {embedder.name} bulk on {embedder.bulk_runtime_used}, names on {models.settings.graph_name_embedder})\n"
    )
    rows_out = []
    for variant in VARIANTS:
        per_round = ", ".join(f"{r['docs_per_s']:.1f}" for r in runs[variant])
        chunks = runs[variant][0].get("chunks", "-")
        rows_out.append(
            [variant, chunks, f"{med(variant, 'seconds'):.1f}", f"**{med(variant, 'docs_per_s'):.1f}**", per_round]
        )
    print(table(["variant", "chunks", "seconds", "docs/s", "docs/s per round"], rows_out) + "\n")
    ratio_rows = []
    for label, num, den, target in TARGETS:
        ratios = [a["docs_per_s"] / b["docs_per_s"] for a, b in zip(runs[num], runs[den], strict=True)]
        value = statistics.median(ratios)
        ratio_rows.append([label, f"**{value:.2f}**", f"≥ {target} " + ("met" if value >= target else "**missed**")])
    print(table(["ratio (median of per-round ratios)", "value", "target"], ratio_rows))
    print(f"\nCollection `{COLLECTION}`; kag stage 1 only (embedding without the graph) is the `kag graph off` row.")


if __name__ == "__main__":
    main()
