"""Retrieval ideas measured against the shipped default on one split (train: never tune on test).

Runs on the cached `kag eval` index of a BEIR dataset (built on first use, as `kag eval retrieval`
does) and each retriever's cached rankings, and prints one table of nDCG@10 and Recall@100:

- the shipped default (dense + lexical + graph, weighted RRF);
- dense pseudo-relevance feedback through the real `HybridRetriever` (`KAG_DENSE_FEEDBACK_*`);
- sequential-dependence lexical queries: adjacent query-word pairs as boosted phrase queries;
- z-score and distribution-based (mean ± 3 sd) score normalisation instead of RRF;
- a fourth list: the documents whose embedded title is closest to the query.

    EVALDATA=... .venv/bin/python scripts/explore_retrieval.py --dataset $EVALDATA/scifact --split train
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from kag.records import ScoredChunk

Row = tuple[str, dict[str, float]]


def main(argv: Sequence[str] | None = None) -> None:
    from kag.cli.eval import graph_variants, open_workspace
    from kag.settings import Settings
    from kag.stores.graph import GraphCache
    from pipelines.evaluation.datasets import BeirDataset, evaluation_queries
    from pipelines.evaluation.metrics import evaluate_run
    from pipelines.evaluation.retrieval import DocumentMap, documents_by_best_chunk
    from pipelines.evaluation.tuning import as_run, collect_rankings
    from pipelines.evaluation.workspace import COLLECTION, default_work_dir
    from pipelines.retrieve import GraphRetriever, HybridRetriever, fuse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.split == "test":
        print("note: ideas are chosen on train; a test run only reports them", file=sys.stderr)

    data = BeirDataset.open(args.dataset)
    queries, qrels, _ = evaluation_queries(data, args.split)
    settings = Settings()
    rt, workspace = open_workspace(
        settings, args.work_dir or default_work_dir(), data.name, data.corpus_sha256(), data.corpus
    )
    s = rt.settings
    rows: list[Row] = []
    try:
        retrievers: dict[str, Any] = {
            "dense": rt.retriever("dense"),
            "lexical": rt.retriever("lexical"),
            f"graph@{s.graph_hops}": GraphRetriever(
                rt.query_extractor,
                GraphCache(rt.stores.ledger),
                hops=s.graph_hops,
                embedder=rt.name_embedder,
                link_threshold=s.graph_link_threshold,
            ),
        }
        cache = collect_rankings(
            retrievers,
            queries,
            COLLECTION,
            s.retrieval_depth,
            cache_dir=workspace.root / "rankings",
            variants={"lexical": f"@title{s.lexical_title_boost:g}"} | graph_variants(rt, [s.graph_hops]),
        )
        documents = DocumentMap(rt.stores.ledger, COLLECTION, workspace.corpus_id)
        doc_of: dict[str, str | None] = {}

        def docs(hits: Sequence[ScoredChunk]) -> list[str]:
            todo = [h for h in hits if h.chunk_id not in doc_of]
            doc_of.update(zip([h.chunk_id for h in todo], documents.corpus_ids(todo), strict=True))
            return documents_by_best_chunk([doc_of.get(h.chunk_id) for h in hits])

        def measure(label: str, run: Mapping[str, list[str]]) -> None:
            means, _ = evaluate_run(qrels, as_run(run), ("ndcg@10", "recall@100"), name="explore")
            rows.append((label, means))
            print(f"{label}: nDCG@10 {means['ndcg@10']:.4f}  R@100 {means['recall@100']:.4f}", file=sys.stderr)

        weights = {"dense": s.weight_dense, "lexical": s.weight_lexical, "graph": s.weight_graph}
        depth = {
            "dense": s.depth_dense or s.retrieval_depth,
            "lexical": s.depth_lexical or s.retrieval_depth,
            "graph": s.depth_graph or s.retrieval_depth,
        }

        def lists(q: str, lexical: Sequence[ScoredChunk] | None = None) -> dict[str, Sequence[ScoredChunk]]:
            return {
                "dense": cache["dense"][q][: depth["dense"]],
                "lexical": (cache["lexical"][q] if lexical is None else lexical)[: depth["lexical"]],
                "graph": cache[f"graph@{s.graph_hops}"][q][: depth["graph"]],
            }

        def default_fusion(q: str, lexical: Sequence[ScoredChunk] | None = None) -> list[ScoredChunk]:
            return fuse(lists(q, lexical), method=s.fusion, weights=weights, rrf_k=s.rrf_k)

        measure("shipped default", {q: docs(default_fusion(q)) for q in queries})

        # 1. dense pseudo-relevance feedback, through the real hybrid retriever
        hybrid = rt.retriever("hybrid")
        assert isinstance(hybrid, HybridRetriever)
        for chunks, weight in ((3, 0.5), (5, 0.5), (10, 0.25), (10, 0.5), (10, 1.0)):
            hybrid.feedback_chunks, hybrid.feedback_weight = chunks, weight
            measure(
                f"dense feedback, top {chunks} × {weight:g}",
                {q: docs(hybrid.candidates(text, [COLLECTION])) for q, text in queries.items()},
            )
        hybrid.feedback_chunks = 0

        # 2. sequential dependence: adjacent analyzed query words as boosted phrase queries
        fulltext: Any = rt.stores.fulltext
        plain = fulltext._text_query
        t, schema = fulltext._t, fulltext._schema

        def dependence(boost: float, slop: int) -> Callable[[str], Any]:
            def build(query: str) -> Any:
                base = plain(query)
                words = fulltext._analyzer.analyze(query)
                pairs = [(a, b) for a, b in zip(words, words[1:], strict=False) if a != b]
                if base is None or not pairs:
                    return base
                clauses = [(t.Occur.Should, base)] + [
                    (t.Occur.Should, t.Query.boost_query(t.Query.phrase_query(schema, "text", list(p), slop), boost))
                    for p in pairs
                ]
                return t.Query.boolean_query(clauses)

            return build

        for boost, slop in ((0.1, 2), (0.25, 8), (0.5, 2)):
            fulltext._text_query = dependence(boost, slop)
            try:
                lexical = {q: fulltext.search(text, depth["lexical"], [COLLECTION]) for q, text in queries.items()}
            finally:
                fulltext._text_query = plain
            measure(
                f"lexical word pairs as phrases (boost {boost:g}, slop {slop})",
                {q: docs(default_fusion(q, lexical[q])) for q in queries},
            )

        # 3. score normalisation instead of ranks: kag's z-score fusion, and Qdrant's DBSF (mean ± 3 sd)
        for how in ("z-score", "mean ± 3 sd"):
            for dense_weight in (1.0, 1.5):
                w = weights | {"dense": dense_weight}
                run = {
                    q: docs(fuse(lists(q), method="zscore", weights=w) if how == "z-score" else dbsf(lists(q), w))
                    for q in queries
                }
                measure(f"{how} fusion, dense × {dense_weight:g}", run)

        # 4. a title list: documents ranked by their embedded title
        corpus = list(data.corpus())
        titles = rt.embedder.embed([d.title or d.text[:200] for d in corpus])
        qids = list(queries)
        similarity = rt.embedder.embed([queries[q] for q in qids]) @ titles.T
        by_title = {q: [corpus[j].id for j in np.argsort(-similarity[i])[: depth["dense"]]] for i, q in enumerate(qids)}
        measure("title vectors alone", by_title)
        for title_weight in (0.25, 0.5):
            run = {}
            for q in qids:
                ranked = {name: docs(hits) for name, hits in lists(q).items()}
                ranked["title"] = by_title[q]
                run[q] = document_rrf(ranked, weights | {"title": title_weight}, s.rrf_k)
            measure(f"+ title vectors × {title_weight:g} (document-level RRF)", run)
        run = {q: document_rrf({n: docs(h) for n, h in lists(q).items()}, weights, s.rrf_k) for q in qids}
        measure("document-level RRF without titles (reference for the two rows above)", run)
    finally:
        rt.close()

    base = rows[0][1]["ndcg@10"]
    print(f"| {data.name} {args.split} ({len(queries)} queries) | nDCG@10 | Δ vs default | R@100 |")
    print("|---|---:|---:|---:|")
    for label, means in rows:
        delta = means["ndcg@10"] - base
        print(f"| {label} | {means['ndcg@10']:.4f} | {delta:+.4f} | {means['recall@100']:.4f} |")


def dbsf(rankings: Mapping[str, Sequence[ScoredChunk]], weights: Mapping[str, float]) -> list[ScoredChunk]:
    """Distribution-based score fusion: the weighted sum of (x - (mean - 3 sd)) / 6 sd per list."""
    scores: dict[str, float] = {}
    meta: dict[str, ScoredChunk] = {}
    for name, hits in rankings.items():
        weight = weights.get(name, 1.0)
        if not hits or weight <= 0:
            continue
        values = np.asarray([h.score for h in hits], dtype=float)
        mean, sd = float(values.mean()), float(values.std()) or 1.0
        seen: set[str] = set()
        for hit, value in zip(hits, (values - mean + 3 * sd) / (6 * sd), strict=True):
            if hit.chunk_id not in seen:
                seen.add(hit.chunk_id)
                scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight * float(value)
                meta.setdefault(hit.chunk_id, hit)
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [ScoredChunk(c, v, meta[c].document_id, meta[c].collection) for c, v in ordered]


def document_rrf(rankings: Mapping[str, Sequence[str]], weights: Mapping[str, float], k: int) -> list[str]:
    scores: dict[str, float] = {}
    for name, ranked in rankings.items():
        for rank, doc in enumerate(ranked, start=1):
            scores[doc] = scores.get(doc, 0.0) + weights.get(name, 1.0) / (k + rank)
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


if __name__ == "__main__":
    main()
