"""Cost of each fusion method on real rankings: `fuse()` timed over every cached query of a `kag eval`
workspace, at the depths and weights of the current settings (the shipped defaults: dense 200,
lexical 200, graph 50), methods interleaved, three rounds.

    .venv/bin/python scripts/bench_fusion.py [--rankings DIR]

DIR defaults to the first SciFact workspace's `rankings/` under ~/.cache/kag/eval (written by
`kag eval tune` or scripts/explore_retrieval.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kag.records import ScoredChunk
from kag.settings import Settings
from pipelines.retrieve import FUSION_METHODS, fuse


def load(folder: Path, prefix: str) -> dict[str, list[ScoredChunk]]:
    found = sorted(folder.glob(f"{prefix}-d*.json"))
    if not found:
        raise SystemExit(f"no cached {prefix} rankings in {folder}: run `kag eval tune` first")
    data = json.loads(found[0].read_text())
    return {q: [ScoredChunk(c, s, d, "eval") for c, s, d in hits] for q, hits in data.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = next(iter(sorted((Path.home() / ".cache" / "kag" / "eval").glob("scifact-*/rankings"))), None)
    parser.add_argument("--rankings", type=Path, default=default)
    args = parser.parse_args()
    if args.rankings is None:
        raise SystemExit("no evaluation workspace found: pass --rankings")
    s = Settings()
    names = ("dense", f"lexical@title{s.lexical_title_boost:g}", f"graph@{s.graph_hops}")
    dense, lexical, graph = (load(args.rankings, name) for name in names)
    queries = [q for q in dense if q in lexical and q in graph]
    weights = {"dense": s.weight_dense, "lexical": s.weight_lexical, "graph": s.weight_graph}
    depth = {
        "dense": s.depth_dense or s.retrieval_depth,
        "lexical": s.depth_lexical or s.retrieval_depth,
        "graph": s.depth_graph or s.retrieval_depth,
    }
    times: dict[str, list[float]] = {m: [] for m in FUSION_METHODS}
    for _ in range(3):
        for method in FUSION_METHODS:
            for q in queries:
                lists = {"dense": dense[q], "lexical": lexical[q], "graph": graph[q]}
                lists = {name: hits[: depth[name]] for name, hits in lists.items()}
                started = time.perf_counter()
                fuse(lists, method=method, weights=weights, rrf_k=s.rrf_k)
                times[method].append(time.perf_counter() - started)
    print(f"| fusion ({len(queries)} queries x 3 rounds) | p50 ms | p95 ms |")
    print("|---|---:|---:|")
    for method, values in times.items():
        values.sort()
        p50, p95 = values[len(values) // 2], values[int(len(values) * 0.95)]
        print(f"| {method} | {1000 * p50:.3f} | {1000 * p95:.3f} |")


if __name__ == "__main__":
    main()
