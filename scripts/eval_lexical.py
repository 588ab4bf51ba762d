"""Compare the two lexical backends on a BEIR dataset: Tantivy BM25 vs Qdrant BM25 sparse vectors.

    .venv/bin/python scripts/eval_lexical.py --dataset DIR (default $EVALDATA/scifact)

Indexes every corpus document (title + text, one chunk per document) into a Tantivy folder and into
a Qdrant collection (qdrant-client in-memory local mode, which applies the IDF modifier exactly as
the server does), runs the split's queries, and scores both runs with pytrec_eval (trec_eval's
nDCG@10 and recall@100). The dataset is read at run time and never copied.

The Qdrant backend needs the average analyzed length of a chunk (KAG_LEXICAL_AVG_DOC_TOKENS); this
script measures it on the corpus, as a deployment would set it, and also reports the default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kag.records import IndexedChunk  # noqa: E402
from kag.settings import Settings  # noqa: E402
from kag.stores.base import FullTextIndex  # noqa: E402
from kag.stores.fulltext import TantivyIndex, _query_analyzer  # noqa: E402
from kag.stores.fulltext_qdrant import QdrantBM25Index  # noqa: E402

COLLECTION = "beir"


def load(dataset: Path, split: str) -> tuple[list[IndexedChunk], dict[str, str], dict[str, dict[str, int]]]:
    chunks = []
    with (dataset / "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            chunks.append(IndexedChunk(doc["_id"], doc["_id"], COLLECTION, doc.get("text", ""), doc.get("title", "")))
    qrels: dict[str, dict[str, int]] = {}
    with (dataset / "qrels" / f"{split}.tsv").open() as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    queries = {}
    with (dataset / "queries.jsonl").open() as fh:
        for line in fh:
            q = json.loads(line)
            if q["_id"] in qrels:
                queries[q["_id"]] = q["text"]
    return chunks, queries, qrels


def run(index: FullTextIndex, queries: dict[str, str], depth: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for qid, text in queries.items():
        hits = index.search(text, depth, [COLLECTION])
        results[qid] = {h.chunk_id: float(h.score) for h in hits}
    return results


def evaluate(results: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate(results)
    return {
        "ndcg@10": statistics.fmean(m["ndcg_cut_10"] for m in per_query.values()),
        "recall@100": statistics.fmean(m["recall_100"] for m in per_query.values()),
    }


def index_into(index: FullTextIndex, chunks: list[IndexedChunk]) -> float:
    started = time.perf_counter()
    for start in range(0, len(chunks), 1000):
        index.add(chunks[start : start + 1000])
        index.commit()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=None, help="BEIR folder (default $EVALDATA/scifact)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--depth", type=int, default=100, help="hits per query (recall@100 needs 100)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest acceptable nDCG@10 difference")
    args = parser.parse_args()
    if args.dataset is None:
        from pipelines.evaluation.datasets import evaldata

        args.dataset = evaldata("scifact")
    if not (args.dataset / "corpus.jsonl").exists():
        print(f"no BEIR dataset at {args.dataset} (corpus.jsonl, queries.jsonl, qrels/)", file=sys.stderr)
        return 2

    chunks, queries, qrels = load(args.dataset, args.split)
    analyzer = _query_analyzer()
    avg_text = statistics.fmean(len(analyzer.analyze(c.text)) for c in chunks)
    avg_title = statistics.fmean(len(analyzer.analyze(c.title)) for c in chunks)
    print(f"{args.dataset.name}: {len(chunks)} documents, {len(queries)} {args.split} queries")
    print(f"measured average analyzed tokens: text {avg_text:.1f}, title {avg_title:.1f}\n")

    from qdrant_client import QdrantClient

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tantivy = TantivyIndex(Path(tmp) / "tantivy")
        seconds = index_into(tantivy, chunks)
        started = time.perf_counter()
        baseline = evaluate(run(tantivy, queries, args.depth), qrels)
        rows.append(("tantivy", "measured by Tantivy", baseline, seconds, time.perf_counter() - started))
        tantivy.close()

        default_avg = Settings.model_fields["lexical_avg_doc_tokens"].default
        for label, avg in (("measured on the corpus", avg_text), ("setting default", default_avg)):
            qdrant = QdrantBM25Index(
                QdrantClient(":memory:"), "kag_lexical", avg_text_tokens=avg, avg_title_tokens=avg_title
            )
            seconds = index_into(qdrant, chunks)
            started = time.perf_counter()
            metrics = evaluate(run(qdrant, queries, args.depth), qrels)
            rows.append((f"qdrant-bm25 (avg {avg:.0f})", label, metrics, seconds, time.perf_counter() - started))
            qdrant.close()

    print("| backend | average length | nDCG@10 | recall@100 | index s | search s |")
    print("|---|---|---|---|---|---|")
    for name, label, m, index_s, search_s in rows:
        print(f"| {name} | {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {index_s:.1f} | {search_s:.1f} |")
    diff = abs(rows[1][2]["ndcg@10"] - baseline["ndcg@10"])
    verdict = "within" if diff <= args.tolerance else "NOT within"
    print(f"\n|nDCG@10 tantivy - qdrant (measured average)| = {diff:.4f}: {verdict} {args.tolerance}")
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
