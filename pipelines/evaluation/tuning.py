"""Sweep query-time retrieval settings (fusion method, weights, RRF k, per-retriever depth, graph hops)
over rankings computed once per retriever, fusing them exactly as `HybridRetriever.candidates` does."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kag.records import ScoredChunk
from pipelines.evaluation.datasets import Qrels
from pipelines.evaluation.metrics import evaluate_run
from pipelines.evaluation.retrieval import documents_by_best_chunk
from pipelines.retrieve import Retriever, fuse

#: retriever ranking cache: name ("dense", "lexical", "graph@2") -> query id -> hits, best first
Rankings = dict[str, dict[str, list[ScoredChunk]]]


def collect_rankings(
    retrievers: Mapping[str, Retriever],
    queries: Mapping[str, str],
    collection: str,
    depth: int,
    *,
    cache_dir: Path | None = None,
    on_query: Callable[[], None] | None = None,
    variants: Mapping[str, str] | None = None,
) -> Rankings:
    """Each retriever's top-`depth` chunks for every query, computed once; shallower depths are prefixes.

    With `cache_dir` (inside the evaluation workspace, whose name fixes the index), a retriever's
    rankings are stored per (retriever, its `variants` tag, depth, query set) and read back by later
    sweeps; the tag names the query-time settings the ranking depends on (the lexical title boost)."""
    variants = variants or {}
    key = hashlib.sha256(json.dumps(sorted(queries.items())).encode()).hexdigest()[:16]
    out: Rankings = {}
    todo: dict[str, Retriever] = {}
    for name, retriever in retrievers.items():
        path = _deepest_cached(cache_dir, name + variants.get(name, ""), key, depth) if cache_dir else None
        if path is not None:
            stored = json.loads(path.read_text())
            out[name] = {
                q: [ScoredChunk(c, s, d, collection) for c, s, d in hits[:depth]] for q, hits in stored.items()
            }
        else:
            todo[name] = retriever
            out[name] = {}
    for qid, text in queries.items():
        for name, retriever in todo.items():
            out[name][qid] = retriever.retrieve(text, depth, [collection])
        if on_query is not None:
            on_query()
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for name in todo:
            data = {q: [[h.chunk_id, h.score, h.document_id] for h in hits] for q, hits in out[name].items()}
            (cache_dir / f"{name}{variants.get(name, '')}-d{depth}-{key}.json").write_text(json.dumps(data))
    return out


def _deepest_cached(cache_dir: Path, name: str, key: str, depth: int) -> Path | None:
    """A cached ranking file at least `depth` deep (its prefixes are the shallower rankings)."""
    found = []
    for path in cache_dir.glob(f"{name}-d*-{key}.json"):
        stored_depth = path.name[len(name) + 2 :].split("-", 1)[0]
        if stored_depth.isdigit() and int(stored_depth) >= depth:
            found.append((int(stored_depth), path))
    return min(found)[1] if found else None


@dataclass(frozen=True)
class FusionConfig:
    """One point of the grid: the query-time settings of the hybrid retriever."""

    fusion: str
    rrf_k: int
    weight_dense: float
    weight_lexical: float
    weight_graph: float
    depth_dense: int
    depth_lexical: int
    depth_graph: int
    graph_hops: int
    document_weight: float = 0.0

    def label(self) -> str:
        fusion = f"rrf k={self.rrf_k}" if self.fusion == "rrf" else self.fusion
        graph = f" g={self.weight_graph:g}@{self.graph_hops}h/{self.depth_graph}" if self.weight_graph > 0 else ""
        document = f" doc={self.document_weight:g}" if self.document_weight > 0 else ""
        return (
            f"{fusion} d={self.weight_dense:g}/{self.depth_dense} l={self.weight_lexical:g}/{self.depth_lexical}"
            f"{graph}{document}"
        )


@dataclass(frozen=True)
class Grid:
    """The values each setting takes; every combination is tried (graph settings only when its weight > 0)."""

    fusion: tuple[str, ...] = ("rrf", "score")
    rrf_k: tuple[int, ...] = (10, 30, 60, 100)
    weight_dense: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    weight_lexical: tuple[float, ...] = (1.0,)
    weight_graph: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)
    depth_dense: tuple[int, ...] = (50, 100, 200)
    depth_lexical: tuple[int, ...] = (50, 100, 200)
    depth_graph: tuple[int, ...] = (50,)
    graph_hops: tuple[int, ...] = (1, 2)
    document_weight: tuple[float, ...] = (0.0,)

    def configs(self) -> Iterable[FusionConfig]:
        for fusion in self.fusion:
            for k in self.rrf_k if fusion == "rrf" else (0,):
                for wd, wl, wg, dd, dl in itertools.product(
                    self.weight_dense, self.weight_lexical, self.weight_graph, self.depth_dense, self.depth_lexical
                ):
                    graph_options = itertools.product(self.depth_graph, self.graph_hops) if wg > 0 else [(0, 0)]
                    for (dg, hops), dw in itertools.product(graph_options, self.document_weight):
                        yield FusionConfig(fusion, k, wd, wl, wg, dd, dl, dg, hops, dw)

    @property
    def max_depth(self) -> int:
        return max(*self.depth_dense, *self.depth_lexical, *self.depth_graph)


def fused_rankings(config: FusionConfig, cache: Rankings, doc_of: Mapping[str, str | None]) -> dict[str, list[str]]:
    """Document rankings of every query under one config: per-retriever prefixes, fused, best chunk per doc."""
    parts = [
        ("dense", "dense", config.weight_dense, config.depth_dense),
        ("lexical", "lexical", config.weight_lexical, config.depth_lexical),
    ]
    if config.weight_graph > 0:
        parts.append(("graph", f"graph@{config.graph_hops}", config.weight_graph, config.depth_graph))
    queries = next(iter(cache.values())).keys()
    out: dict[str, list[str]] = {}
    for qid in queries:
        rankings = {name: cache[key][qid][:depth] for name, key, weight, depth in parts if weight > 0}
        weights = {name: weight for name, _, weight, _ in parts}
        fused = fuse(
            rankings,
            method=config.fusion,
            weights=weights,
            rrf_k=config.rrf_k or 60,
            document_weight=config.document_weight,
        )
        out[qid] = documents_by_best_chunk([doc_of.get(h.chunk_id) for h in fused])
    return out


def as_run(rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    return {q: {d: 1.0 / r for r, d in enumerate(docs, start=1)} for q, docs in rankings.items()}


def sweep(
    configs: Iterable[FusionConfig],
    cache: Rankings,
    qrels: Qrels,
    doc_of: Mapping[str, str | None],
    *,
    metrics: Sequence[str] = ("ndcg@10", "recall@100"),
    on_config: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Metrics of every config, best first by the first metric."""
    rows: list[dict[str, Any]] = []
    for config in configs:
        means, _ = evaluate_run(qrels, as_run(fused_rankings(config, cache, doc_of)), metrics, name="sweep")
        rows.append({"config": asdict(config), "label": config.label(), "metrics": means})
        if on_config is not None:
            on_config()
    rows.sort(key=lambda r: (-r["metrics"][metrics[0]], r["label"]))
    return rows


def marginals(rows: Sequence[Mapping[str, Any]], metric: str = "ndcg@10") -> dict[str, dict[str, float]]:
    """For each setting and value, the best score reached with that value (how much each choice matters)."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        for key, value in row["config"].items():
            best = out.setdefault(key, {})
            shown = str(value)
            best[shown] = max(best.get(shown, 0.0), row["metrics"][metric])
    return out
