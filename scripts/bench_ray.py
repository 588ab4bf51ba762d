"""In-process vs Ray executor ingestion throughput on this machine, measured in one run.

    .venv/bin/python scripts/bench_ray.py [--copies 2] [--cpus 2]

Ingests the demo corpus (`data/`, copied `--copies` times under distinct paths) into fresh embedded
stores (SQLite + Qdrant Edge + Tantivy), once with the in-process executor and twice with the Ray
executor on a local Ray instance (`ray.init(num_cpus=--cpus)`): "cold" includes starting Ray's
workers and the embedding actor, "warm" reuses them as a long-lived API process or cluster would.
It also times the driver's writes alone (ledger + Qdrant + Tantivy, embeddings already computed),
the one part of a Ray job that does not scale out with the cluster.

On one 2-core machine Ray cannot be faster than in-process: it runs the same work on the same two
cores plus serialization and scheduling. The ratio measures that overhead; docs/scale-out.md turns
the per-stage numbers into an estimate for a GPU cluster.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.executors import InProcessExecutor, PrepareSpec  # noqa: E402
from ingest.pipeline import Ingestor, JobReport  # noqa: E402
from kag.stores.bundle import open_stores  # noqa: E402

SPEC = PrepareSpec(fingerprint="bench-ray")


def make_corpus(root: Path, copies: int) -> Path:
    for i in range(copies):
        shutil.copytree(ROOT / "data", root / f"copy-{i}")
    return root


class WriteClock:
    """Wraps `Ingestor._write_batch` to add up the time the driver spends writing."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.seconds = 0.0
        real = ingestor._write_batch

        def timed(*args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            try:
                real(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        ingestor._write_batch = timed  # type: ignore[method-assign]


def ingest(workdir: Path, corpus: Path, embedder: Any, preparer: Any, executor: Any) -> tuple[JobReport, float, float]:
    stores = open_stores(data_dir=workdir, database_url=f"sqlite:///{workdir / 'ledger.sqlite3'}", dim=embedder.dim)
    try:
        ingestor = Ingestor(
            stores,
            embedder,
            preparer.chunker,
            preparer.registry,
            extractor=SPEC.build_extractor(),
            max_file_bytes=SPEC.max_file_bytes,
            batch_chunks=256,
            fingerprint=SPEC.fingerprint,
            executor=executor,
        )
        clock = WriteClock(ingestor)
        started = time.perf_counter()
        report = ingestor.ingest([corpus], "bench")
        seconds = time.perf_counter() - started
        assert report.status == "completed" and not report.errors, report.errors
        return report, seconds, clock.seconds
    finally:
        stores.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=2, help="copies of data/ to ingest")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args()

    import ray

    from ingest.ray_executor import RayExecutor

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = make_corpus(root / "corpus", args.copies)
        embedder = SPEC.build_embedder()
        preparer = SPEC.build_preparer()
        embedder.embed(["warm up"])
        preparer.chunker.tokenizer.warm_up()

        # per-stage costs on one core of this machine, the inputs of the cluster estimate
        files = sorted(p for p in (corpus / "copy-0").rglob("*") if p.is_file())
        started = time.perf_counter()
        prepared = [preparer.prepare(p, "bench", None) for p in files]
        prepare_s = time.perf_counter() - started
        texts = [c.text for item in prepared for c in getattr(item, "chunks", [])]
        started = time.perf_counter()
        embedder.embed(texts)
        embed_s = time.perf_counter() - started

        rows = []
        report, seconds, writes = ingest(root / "local", corpus, embedder, preparer, InProcessExecutor())
        rows.append(("in-process", report, seconds, writes))

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        executor = RayExecutor(SPEC)
        try:
            report, seconds, writes = ingest(root / "ray-cold", corpus, embedder, preparer, executor)
            rows.append(("ray (cold: starts workers + actor)", report, seconds, writes))
            report, seconds, writes = ingest(root / "ray-warm", corpus, embedder, preparer, executor)
            rows.append(("ray (warm)", report, seconds, writes))
        finally:
            executor.close()
            ray.shutdown()

    base = rows[0][2]
    print(
        f"demo corpus x{args.copies}: {rows[0][1].documents_added} documents, {rows[0][1].chunks_added} chunks; "
        f"local Ray instance with {args.cpus} CPUs\n"
    )
    print("| executor | seconds | docs/s | chunks/s | throughput vs in-process | driver writes s | writes chunks/s |")
    print("|---|---|---|---|---|---|---|")
    for name, report, seconds, writes in rows:
        print(
            f"| {name} | {seconds:.1f} | {report.documents_added / seconds:.2f} | {report.chunks_added / seconds:.1f} "
            f"| {base / seconds:.2f}x | {writes:.1f} | {report.chunks_added / writes:.0f} |"
        )
    print(
        f"\nper stage, sequential in this process: parse + chunk + spaCy graph {prepare_s / len(files):.3f} s/document "
        f"({len(texts) / len(files):.1f} chunks/document); embedding {len(texts) / embed_s:.1f} chunks/s "
        f"(torch on {embedder.device}, all cores)"
    )
    print("\n'driver writes' for in-process includes embedding (done inside _write_batch there); for Ray it is")
    print("the ledger + Qdrant + Tantivy writes alone, since the embedding actor already produced the vectors.")


if __name__ == "__main__":
    main()
