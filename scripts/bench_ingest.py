"""Ingestion throughput, vector top-10 latency and peak memory on SciFact, as markdown tables (`make bench`).

Each phase runs in its own subprocess (this script re-invoked with `--phase`), so every peak-RSS
figure belongs to one phase. Absolute times drift on shared machines: compare the ratios, which
are measured within one run with the variants interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# the same offline switches as the Makefile: nothing here may reach for a model hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
COLLECTION = "scifact"
N_COLLECTIONS = 10
TOP_K = 10
WARMUP_QUERIES = 10
VERSIONED = [
    "torch",
    "sentence-transformers",
    "spacy",
    "qdrant-edge-py",
    "qdrant-client",
    "tantivy",
    "SQLAlchemy",
    "numpy",
]


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds nothing but the tables."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's RSS high-water mark (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- data ---------------------------------------------------------------------------------


def read_jsonl(path: Path, limit: int | None = None, skip: int = 0) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh):
            if number < skip or not line.strip():
                continue
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def doc_text(row: dict[str, Any]) -> str:
    """A BEIR row as the plain-text file a user would have: title line, blank line, abstract."""
    title = str(row.get("title") or "").strip()
    body = str(row.get("text") or "").strip()
    return f"{title}\n\n{body}\n" if title else f"{body}\n"


def write_corpus(rows: Sequence[dict[str, Any]], folder: Path) -> None:
    """One `.txt` file per document, like a real batch-ingestion folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        (folder / f"{row['_id']}.txt").write_text(doc_text(row), encoding="utf-8")


# --- ingestion phase ------------------------------------------------------------------------


class StageClock:
    """Accumulates wall time per stage by wrapping bound methods of live objects (thread-safe)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._patched: list[tuple[object, str]] = []

    def wrap(self, obj: object, name: str, stage: str) -> None:
        inner: Callable[..., Any] = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                with self._lock:
                    self.seconds[stage] = self.seconds.get(stage, 0.0) + spent
                    self.calls[stage] = self.calls.get(stage, 0) + 1

        setattr(obj, name, timed)  # an instance attribute shadows the class's method
        self._patched.append((obj, name))

    def restore(self) -> None:
        for obj, name in reversed(self._patched):
            delattr(obj, name)
        self._patched.clear()

    def get(self, stage: str) -> float:
        return self.seconds.get(stage, 0.0)


def instrument(ingestor: Any, clock: StageClock) -> None:
    """Time every stage of `Ingestor` without changing it: producer thread and consumer thread."""
    stores = ingestor.stores
    # producer thread (parse, chunk, graph), per file
    clock.wrap(ingestor, "_prepare", "producer total")
    clock.wrap(stores.ledger, "find_document", "ledger lookup")
    clock.wrap(ingestor.preparer.chunker, "chunk", "chunk")
    if ingestor.preparer.extractor is not None:
        clock.wrap(ingestor.preparer.extractor, "extract", "graph")
    # consumer thread (embed, write), per batch
    clock.wrap(ingestor, "_write_batch", "consumer total")
    clock.wrap(ingestor.embedder, "embed", "embed")
    clock.wrap(stores.ledger, "write_document", "ledger write_document")
    clock.wrap(stores.ledger, "mark_indexed", "ledger mark_indexed")
    clock.wrap(stores.ledger, "update_job", "ledger update_job")  # after each batch, outside _write_batch
    clock.wrap(stores.vectors, "upsert", "vector upsert")
    clock.wrap(stores.vectors, "flush", "vector flush")
    clock.wrap(stores.fulltext, "add", "fulltext add")
    clock.wrap(stores.fulltext, "commit", "fulltext commit")
    # once per job, after the last batch
    clock.wrap(stores.vectors, "optimize", "vector optimize")


def stage_breakdown(clock: StageClock, wall: float) -> dict[str, float]:
    get = clock.get
    producer, consumer = get("producer total"), get("consumer total")
    parse = producer - get("chunk") - get("graph") - get("ledger lookup")
    inside_batch = (  # the stages called from inside _write_batch
        get("embed")
        + get("ledger write_document")
        + get("ledger mark_indexed")
        + get("vector upsert")
        + get("vector flush")
        + get("fulltext add")
        + get("fulltext commit")
    )
    return {
        "read + parse (loader)": parse,
        "chunk (tokenize + cut)": get("chunk"),
        "graph extraction (spaCy)": get("graph"),
        "ledger lookup (unchanged?)": get("ledger lookup"),
        "producer busy": producer,
        "embedding": get("embed"),
        "ledger write (rows + graph)": get("ledger write_document"),
        "ledger mark indexed": get("ledger mark_indexed"),
        "ledger job progress": get("ledger update_job"),
        "vector upsert + flush": get("vector upsert") + get("vector flush"),
        "full-text add + commit": get("fulltext add") + get("fulltext commit"),
        "consumer other": max(consumer - inside_batch, 0.0),
        # job progress is written after each batch, outside _write_batch (and once at each end of the job)
        "consumer busy": consumer + get("ledger update_job"),
        "vector optimize (end of job)": get("vector optimize"),
        "wall": wall,
    }


def _settings(data_dir: Path, graph: bool) -> Any:
    from kag.settings import Settings

    # the user's KAG_* settings apply, except the stores: always fresh embedded ones in a temp dir
    return Settings(data_dir=data_dir, graph_enabled=graph, database_url=None, qdrant_url=None)


def _runtime(data_dir: Path, graph: bool, models: Any) -> Any:
    """A `Runtime` as the CLI builds it, sharing the already loaded models of `models`."""
    from kag.cli.runtime import Runtime

    runtime = Runtime(_settings(data_dir, graph))
    # the models are cached properties; loading them again per run would only cost time
    runtime.__dict__["embedder"] = models.embedder
    runtime.__dict__["extractor"] = models.extractor
    return runtime


def run_pipeline(docs_dir: Path, data_dir: Path, graph: bool, models: Any) -> dict[str, Any]:
    """One `kag ingest docs_dir` equivalent into a fresh data dir; returns throughput and stages."""
    runtime = _runtime(data_dir, graph, models)
    try:
        ingestor = runtime.ingestor  # opens the stores (migrations) before the clock starts
        ingestor.preparer.chunker.tokenizer.warm_up()
        clock = StageClock()
        instrument(ingestor, clock)
        try:
            started = time.perf_counter()
            report = ingestor.ingest([docs_dir], COLLECTION)
            wall = time.perf_counter() - started
        finally:
            clock.restore()
        if report.documents_failed:
            log(f"warning: {report.documents_failed} documents failed: {report.errors[:3]}")
        return {
            "graph": graph,
            "documents": report.documents_added,
            "failed": report.documents_failed,
            "chunks": report.chunks_added,
            "seconds": wall,
            "chunks_per_s": report.chunks_added / wall,
            "docs_per_s": report.documents_added / wall,
            "batches": clock.calls.get("consumer total", 0),
            "stages": stage_breakdown(clock, wall),
        }
    finally:
        runtime.close()


def ledger_chunk_batches(data_dir: Path, models: Any, batch_chunks: int) -> list[list[str]]:
    """The chunk texts of an ingested data dir, grouped exactly as the pipeline grouped them."""
    from sqlalchemy import select

    from kag.ledger.models import ChunkRow, DocumentRow

    runtime = _runtime(data_dir, True, models)
    try:
        with runtime.stores.ledger.session() as s:
            rows = s.execute(
                select(DocumentRow.source_uri, ChunkRow.ordinal, ChunkRow.text).join(
                    DocumentRow, DocumentRow.id == ChunkRow.document_id
                )
            ).all()
    finally:
        runtime.close()
    per_doc: dict[str, list[tuple[int, str]]] = {}
    for uri, ordinal, text in rows:
        per_doc.setdefault(uri, []).append((ordinal, text))
    batches: list[list[str]] = []
    batch: list[str] = []
    for uri in sorted(per_doc):  # the pipeline's file order (sorted resolved paths)
        batch.extend(text for _, text in sorted(per_doc[uri]))
        if len(batch) >= batch_chunks:  # the producer's rule: flush once a batch reaches the size
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


def run_embed_only(batches: list[list[str]], embedder: Any) -> tuple[dict[str, Any], Any]:
    import numpy as np

    started = time.perf_counter()
    vectors = [embedder.embed(batch) for batch in batches]
    wall = time.perf_counter() - started
    chunks = sum(len(b) for b in batches)
    return {"chunks": chunks, "seconds": wall, "chunks_per_s": chunks / wall}, np.concatenate(vectors)


def cpu_budget(batches: list[list[str]], embedder: Any, extractor: Any, name_embedder: Any) -> dict[str, float]:
    """CPU seconds (all threads of this process, `time.process_time`) per chunk of each piece of work
    the graph adds, on the same chunk texts and batches as the ingestion runs, one piece at a time,
    each lever beside what it replaced: chunk embedding on torch vs the shipped bulk runtime, spaCy
    one document per call vs batched across documents, entity names through the transformer vs the
    shipped name embedder, and a second job over the same collection (its names are looked up).

    CPU time is what the cores are asked for, so it does not drift with how the work overlaps. On a
    machine whose cores the embedding alone keeps busy (CPU-only embedding), no scheduling can lift
    the graph-on throughput above embedding / (embedding + extraction + names) of embedding-only."""
    from kag.models.embedder import SentenceTransformerEmbedder
    from kag.records import ChunkDraft

    def cpu(work: Callable[[], Any]) -> float:
        started = time.process_time()
        work()
        return time.process_time() - started

    torch_embedder = SentenceTransformerEmbedder(embedder.model_path, batch_size=embedder.batch_size, runtime="torch")
    torch_embedder.warm_up()
    chunks = sum(len(b) for b in batches)
    out: dict[str, float] = {"chunks": chunks}
    # each text is one document here (SciFact: one abstract per file, one to three chunks)
    documents = [[ChunkDraft(0, text, 0, len(text), 0)] for batch in batches for text in batch]
    names: dict[str, None] = {}
    mentions = 0
    for rnd in range(2):  # alternate old and new twice; keep the second round's figures
        out["embedding_torch"] = cpu(lambda: [torch_embedder.embed(b) for b in batches])
        out["embedding"] = cpu(lambda: [embedder.embed(b) for b in batches])
        out["extraction_per_document"] = cpu(lambda: [extractor.extract(d) for d in documents])
        found: list[Any] = []
        out["extraction"] = cpu(lambda found=found: found.extend(extractor.extract_many(documents)))
        if rnd == 0:
            for graph in found:
                names.update(dict.fromkeys(e.name for e in graph.entities))
                mentions += len(graph.entities)
        ordered = list(names)
        parts = [ordered[i : i + 512] for i in range(0, len(ordered), 512)]  # embed_entity_names' batches
        out["names_transformer"] = cpu(lambda parts=parts: [torch_embedder.embed(p) for p in parts])
        out["names"] = cpu(lambda parts=parts: [name_embedder.embed(p) for p in parts])
    torch_embedder.close()
    ms = {k: 1000 * v / chunks for k, v in out.items() if k != "chunks"}
    return {
        "chunks": chunks,
        "names": len(names),
        "entities_per_document_sum": mentions,
        "name_embedder": str(name_embedder.name),
        "embedding_runtime": str(getattr(embedder, "bulk_runtime_used", "torch")),
        **{f"{k}_cpu_ms_per_chunk": v for k, v in ms.items()},
        "bound": out["embedding"] / (out["embedding"] + out["extraction"] + out["names"]),
        "bound_before": out["embedding_torch"]
        / (out["embedding_torch"] + out["extraction_per_document"] + out["names_transformer"]),
        "bound_without_names": out["embedding"] / (out["embedding"] + out["extraction"]),
    }


def phase_ingest(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from kag.cli.runtime import Runtime

    rows = read_jsonl(args.corpus, args.limit)
    docs_dir = work / "corpus"
    write_corpus(rows, docs_dir)
    warm_dir = work / "warmup-corpus"
    write_corpus(rows[:16], warm_dir)
    log(f"ingest: {len(rows)} SciFact documents written as .txt files to {docs_dir}")

    models = Runtime(_settings(work / "models-unused", True))
    load_started = time.perf_counter()
    embedder, _ = models.embedder, models.extractor  # load both models once, outside every timing
    load_seconds = time.perf_counter() - load_started
    embedder.embed(["warm-up"])
    batch_chunks = models.settings.index_batch_size
    # one small throwaway job, so first-call costs (torch kernels, spaCy, SQLite) hit no timed run
    run_pipeline(warm_dir, work / "data-warmup", True, models)
    log(f"ingest: models loaded in {load_seconds:.1f} s, warm-up job done")

    variants = ["full", "no_graph", "embed_only"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    batches: list[list[str]] | None = None
    for rnd in range(args.rounds):
        order = variants[rnd % 3 :] + variants[: rnd % 3]  # rotate so no variant always goes first
        for variant in order:
            if variant == "embed_only":
                assert batches is not None  # round 0 starts with the full pipeline
                result, vectors = run_embed_only(batches, embedder)
                if rnd == 0:
                    np.save(work / "chunk_vectors.npy", vectors)
            else:
                data_dir = work / f"data-{variant}-{rnd}"
                result = run_pipeline(docs_dir, data_dir, variant == "full", models)
                if batches is None:
                    batches = ledger_chunk_batches(data_dir, models, batch_chunks)
                shutil.rmtree(data_dir, ignore_errors=True)
            runs[variant].append(result)
            log(f"ingest round {rnd + 1}/{args.rounds}: {variant:<10} {result['chunks_per_s']:.1f} chunks/s")
    assert batches is not None
    cpu = cpu_budget(batches, embedder, models.extractor, models.name_embedder)
    log(f"ingest: CPU budget per chunk {cpu}")
    s = models.settings
    return {
        "cpu_budget": cpu,
        "documents": len(rows),
        "format": "one .txt file per document (title line, blank line, abstract)",
        "settings": {
            "chunk_size": s.chunk_size,
            "chunk_overlap": s.chunk_overlap,
            "embedding_batch_size": s.embedding_batch_size,
            "index_batch_size": s.index_batch_size,
            "embedding_device": s.embedding_device,
        },
        "model_load_seconds": load_seconds,
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "peak_rss_mb": peak_rss_mb(),
    }


# --- vector phases ---------------------------------------------------------------------------


def phase_prep(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Real SciFact chunk embeddings (reused from the ingest phase, topped up) and query embeddings."""
    import numpy as np

    from ingest.chunking import Chunker, HFTokenizer
    from ingest.loaders.text import TextLoader
    from kag.cli.runtime import Runtime

    runtime = Runtime(_settings(work / "models-unused", False))
    embedder = runtime.embedder
    saved = work / "chunk_vectors.npy"
    parts = [np.load(saved)] if saved.exists() else []
    have = sum(len(p) for p in parts)
    embedded_here = 0
    if have < args.real_vectors:
        s = runtime.settings
        chunker = Chunker(HFTokenizer(embedder.model_path), s.chunk_size, s.chunk_overlap)
        loader = TextLoader()
        texts: list[str] = []
        for row in read_jsonl(args.corpus, skip=args.limit if have else 0):
            doc = loader.load(doc_text(row).encode(), source=str(row["_id"]))
            texts += [c.text for c in chunker.chunk(doc)]
            if have + len(texts) >= args.real_vectors:
                break
        log(f"prep: embedding {len(texts)} more SciFact chunks")
        parts.append(embedder.embed(texts))
        embedded_here = len(texts)
    base = np.concatenate(parts).astype(np.float32)
    queries = [q["text"] for q in read_jsonl(args.corpus.parent / "queries.jsonl", args.queries)]
    query_vectors = embedder.embed(queries)
    np.save(work / "base.npy", base)
    np.save(work / "queries.npy", query_vectors)
    log(f"prep: {len(base)} real chunk vectors, {len(query_vectors)} query vectors")
    return {"real_vectors": len(base), "embedded_here": embedded_here, "queries": len(query_vectors)}


def make_points(base: Any, size: int, noise: float, seed: int = 0) -> tuple[Any, float]:
    """`size` unit vectors: the real ones first, then real ones plus Gaussian noise, renormalized."""
    import numpy as np

    real = min(size, len(base))
    if size <= real:
        return base[:size].copy(), 1.0
    rng = np.random.default_rng(seed)
    extra = size - real
    source = rng.integers(0, len(base), extra)
    dim = base.shape[1]
    # noise of expected norm `noise` on a unit vector
    synth = base[source] + rng.standard_normal((extra, dim)).astype(np.float32) * (noise / np.sqrt(dim))
    synth /= np.linalg.norm(synth, axis=1, keepdims=True)
    mean_cos = float(np.mean(np.sum(synth * base[source], axis=1)))
    return np.concatenate([base[:real], synth]).astype(np.float32), mean_cos


def collection_of(i: int) -> str:
    return f"c{i % N_COLLECTIONS}"


def exact_top(points: Any, query: Any, allowed: Any | None) -> set[int]:
    import numpy as np

    scores = points @ query
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return set(np.argpartition(-scores, TOP_K)[:TOP_K].tolist())


def _point_numbers(chunk_ids: Sequence[str]) -> set[int]:
    return {int(c.removeprefix("p")) for c in chunk_ids}


def phase_vectors(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Load `size` points into one backend and time top-10 queries with and without filters."""
    import numpy as np

    from kag.records import IndexedChunk
    from kag.stores.vector import VECTOR_NAME, EdgeVectorIndex, QdrantClientVectorIndex

    base = np.load(work / "base.npy")
    queries = np.load(work / "queries.npy")
    size, backend = args.size, args.backend
    if backend == "client":
        queries = queries[: args.client_queries]
    points, mean_cos = make_points(base, size, args.noise)
    dim = points.shape[1]
    chunks = [IndexedChunk(f"p{i}", f"d{i // 2}", collection_of(i), "") for i in range(size)]
    everything = [collection_of(i) for i in range(N_COLLECTIONS)]
    folder = work / f"{backend}-{size}"
    result: dict[str, Any] = {"backend": backend, "size": size, "real": min(size, len(base)), "synth_cos": mean_cos}

    index: Any
    if backend == "edge":
        index = EdgeVectorIndex(folder, dim)
    else:
        from qdrant_client import QdrantClient

        index = QdrantClientVectorIndex(QdrantClient(path=str(folder)), "bench", dim, owns_client=True)
    try:
        started = time.perf_counter()
        step = 4096
        for start in range(0, size, step):
            index.upsert(chunks[start : start + step], points[start : start + step])
        index.flush()
        result["upsert_s"] = time.perf_counter() - started
        started = time.perf_counter()
        index.optimize()
        result["optimize_s"] = time.perf_counter() - started
        if backend == "edge":
            result["edge_stats"] = index.stats()
        log(f"vectors {backend} {size}: loaded in {result['upsert_s']:.1f} s, optimize {result['optimize_s']:.1f} s")

        if backend == "edge":
            q = index._q  # the engine itself, for the one query the kag API never sends: no filter

            def unfiltered(vector: Any) -> list[str]:
                request = q.QueryRequest(
                    limit=TOP_K, query=q.Query.Nearest(vector, using=VECTOR_NAME), with_payload=True
                )
                return [p.payload["chunk_id"] for p in index._live().query(request)]
        else:

            def unfiltered(vector: Any) -> list[str]:
                response = index._live().query_points(
                    "bench", query=vector.tolist(), using=VECTOR_NAME, limit=TOP_K, with_payload=True
                )
                return [p.payload["chunk_id"] for p in response.points]

        modes: dict[str, Callable[[Any, str], list[str]]] = {
            "none": lambda v, c: unfiltered(v),
            "all": lambda v, c: [h.chunk_id for h in index.search(v, TOP_K, everything)],
            "one": lambda v, c: [h.chunk_id for h in index.search(v, TOP_K, [c])],
        }
        times: dict[str, list[float]] = {m: [] for m in modes}
        recall: dict[str, list[float]] = {m: [] for m in modes}
        labels = np.array([i % N_COLLECTIONS for i in range(size)])
        names = list(modes)
        for qi in range(-WARMUP_QUERIES, len(queries)):
            vector = queries[qi % len(queries)]
            coll = qi % N_COLLECTIONS
            for m in names[qi % 3 :] + names[: qi % 3]:  # interleave modes, rotating which goes first
                started = time.perf_counter()
                hits = modes[m](vector, f"c{coll}")
                spent = time.perf_counter() - started
                if qi < 0:
                    continue
                times[m].append(spent * 1000)
                truth = exact_top(points, vector, labels == coll if m == "one" else None)
                recall[m].append(len(_point_numbers(hits) & truth) / TOP_K)
        result["latency_ms"] = {
            m: {"p50": percentile(t, 50), "p95": percentile(t, 95), "mean": statistics.fmean(t)}
            for m, t in times.items()
        }
        result["recall"] = {m: statistics.fmean(r) for m, r in recall.items()}
        result["queries"] = len(queries)
    finally:
        index.close()
    result["peak_rss_mb"] = peak_rss_mb()
    shutil.rmtree(folder, ignore_errors=True)
    return result


# --- orchestration ---------------------------------------------------------------------------


def run_phase(args: argparse.Namespace, work: Path, phase: str, *extra: str) -> dict[str, Any]:
    """Re-invoke this script for one phase in a fresh process; its peak RSS is its own."""
    out = work / f"result-{phase}-{'-'.join(extra) or 'main'}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--workdir",
        str(work),
        "--result",
        str(out),
        "--corpus",
        str(args.corpus),
        "--limit",
        str(args.limit),
        "--queries",
        str(args.queries),
        "--rounds",
        str(args.rounds),
        "--real-vectors",
        str(args.real_vectors),
        "--noise",
        str(args.noise),
        "--client-queries",
        str(args.client_queries),
        *extra,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    result = json.loads(out.read_text())
    result["phase_seconds"] = time.perf_counter() - started
    return result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(torch_threads: int) -> str:
    versions = []
    for name in VERSIONED:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {cores} cores usable ({os.cpu_count()} online), {cpu_model()}, torch threads {torch_threads}, "
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}\n"
        f"versions: {', '.join(versions)}"
    )


def med(runs: Sequence[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def ingest_tables(res: dict[str, Any]) -> str:
    runs = res["runs"]
    full, nog, emb = runs["full"], runs["no_graph"], runs["embed_only"]
    rounds = len(full)
    # ratios per round (the variants ran back to back), then the median over rounds
    ratio_full = statistics.median(f["chunks_per_s"] / e["chunks_per_s"] for f, e in zip(full, emb, strict=True))
    ratio_nog = statistics.median(n["chunks_per_s"] / e["chunks_per_s"] for n, e in zip(nog, emb, strict=True))
    chunks = full[0]["chunks"]
    s = res["settings"]
    out = [
        f"### 1. Ingestion throughput: {res['documents']} SciFact documents, {chunks} chunks "
        f"(median of {rounds} interleaved rounds)",
        "",
        f"Input: {res['format']}; `Runtime(Settings(...)).ingestor.ingest([folder])` into a fresh embedded data "
        f"dir per run (SQLite + Qdrant Edge + Tantivy); chunk {s['chunk_size']}/{s['chunk_overlap']} tokens, "
        f"embedding batch {s['embedding_batch_size']} on {s['embedding_device']}, index batch "
        f"{s['index_batch_size']} chunks. Models loaded once beforehand ({res['model_load_seconds']:.1f} s, not "
        "counted). Embedding-only: the same embedder on the same chunk texts read back from the ledger, in the "
        "pipeline's batches.",
        "",
    ]
    rows = []
    for label, variant in (
        ("full pipeline (graph on, default)", full),
        ("full pipeline, graph off", nog),
        ("embedding only", emb),
    ):
        per_round = ", ".join(f"{r['chunks_per_s']:.1f}" for r in variant)
        docs = f"{med(variant, 'docs_per_s'):.1f}" if "docs_per_s" in variant[0] else "-"
        rows.append(
            [label, f"{med(variant, 'seconds'):.1f}", f"**{med(variant, 'chunks_per_s'):.1f}**", docs, per_round]
        )
    out.append(table(["run", "seconds", "chunks/s", "docs/s", "chunks/s per round"], rows))
    out += [
        "",
        table(
            ["ratio (pipeline / embedding-only, median of per-round ratios)", "value", "target"],
            [
                ["graph off", f"**{ratio_nog:.2f}**", "≥ 0.85 " + ("met" if ratio_nog >= 0.85 else "**missed**")],
                [
                    "graph on (default)",
                    f"**{ratio_full:.2f}**",
                    "≥ 0.85 " + ("met" if ratio_full >= 0.85 else "**missed**"),
                ],
            ],
        ),
        "",
        "#### Per-stage breakdown (median seconds over rounds)",
        "",
        "The producer thread (read, parse, chunk, graph) and the consumer thread (embed, write) overlap, so the "
        "stages add up to more than the wall time; each figure is wall time inside the stage, slowed by whatever "
        "the other thread runs on the shared cores. A busy thread near the wall time is the bottleneck.",
        "",
    ]
    stage_names = list(full[0]["stages"])
    threads = {
        "read + parse (loader)": "producer",
        "chunk (tokenize + cut)": "producer",
        "graph extraction (spaCy)": "producer",
        "ledger lookup (unchanged?)": "producer",
        "producer busy": "producer",
        "embedding": "consumer",
        "ledger write (rows + graph)": "consumer",
        "ledger mark indexed": "consumer",
        "ledger job progress": "consumer",
        "vector upsert + flush": "consumer",
        "full-text add + commit": "consumer",
        "consumer other": "consumer",
        "consumer busy": "consumer",
        "vector optimize (end of job)": "main",
        "wall": "",
    }
    rows = []
    for name in stage_names:
        f = statistics.median(r["stages"][name] for r in full)
        n = statistics.median(r["stages"][name] for r in nog)
        fw, nw = med(full, "seconds"), med(nog, "seconds")
        bold = name in ("producer busy", "consumer busy", "wall")
        label = f"**{name}**" if bold else name
        rows.append(
            [
                label,
                threads[name],
                f"{f:.2f}",
                f"{100 * f / fw:.0f}%",
                f"{1000 * f / chunks:.1f}",
                f"{n:.2f}",
                f"{100 * n / nw:.0f}%",
            ]
        )
    emb_s = med(emb, "seconds")
    rows.append(
        [
            "embedding only (same texts, nothing else running)",
            "main",
            f"{emb_s:.2f}",
            "",
            f"{1000 * emb_s / chunks:.1f}",
            "",
            "",
        ]
    )
    out.append(table(["stage", "thread", "graph on s", "% wall", "ms/chunk", "graph off s", "% wall"], rows))
    cpu = res.get("cpu_budget")
    if cpu:
        graph_before = cpu["extraction_per_document_cpu_ms_per_chunk"] + cpu["names_transformer_cpu_ms_per_chunk"]
        graph_now = cpu["extraction_cpu_ms_per_chunk"] + cpu["names_cpu_ms_per_chunk"]
        out += [
            "",
            "#### CPU budget: what the graph asks of the cores (CPU seconds of all threads, same chunks)",
            "",
            "Each piece run alone after the rounds. Where the embedding alone keeps every core busy (any "
            "CPU-only machine), the graph-on ratio cannot exceed the bound, however the work is scheduled.",
            "",
            table(
                ["work", "before (ms/chunk)", "now (ms/chunk)", "now / before"],
                [
                    [
                        f"embedding the chunks (torch -> {cpu.get('embedding_runtime', 'torch')})",
                        f"{cpu['embedding_torch_cpu_ms_per_chunk']:.1f}",
                        f"{cpu['embedding_cpu_ms_per_chunk']:.1f}",
                        f"{cpu['embedding_cpu_ms_per_chunk'] / cpu['embedding_torch_cpu_ms_per_chunk']:.2f}",
                    ],
                    [
                        "graph extraction (spaCy; one document per call -> batched across documents)",
                        f"{cpu['extraction_per_document_cpu_ms_per_chunk']:.1f}",
                        f"{cpu['extraction_cpu_ms_per_chunk']:.1f}",
                        f"{cpu['extraction_cpu_ms_per_chunk'] / cpu['extraction_per_document_cpu_ms_per_chunk']:.2f}",
                    ],
                    [
                        f"entity names ({cpu['names']} distinct of {cpu['entities_per_document_sum']} per-document "
                        f"entities; transformer -> {cpu['name_embedder']})",
                        f"{cpu['names_transformer_cpu_ms_per_chunk']:.1f}",
                        f"{cpu['names_cpu_ms_per_chunk']:.1f}",
                        f"{cpu['names_cpu_ms_per_chunk'] / cpu['names_transformer_cpu_ms_per_chunk']:.2f}",
                    ],
                    [
                        "**graph work (extraction + names)**",
                        f"{graph_before:.1f}",
                        f"{graph_now:.1f}",
                        f"**{graph_now / graph_before:.2f}**",
                    ],  # fmt: skip
                    [
                        "**bound on the graph-on ratio**",
                        f"{cpu['bound_before']:.2f}",
                        f"**{cpu['bound']:.2f}**",
                        "",
                    ],  # fmt: skip
                    ["bound without name embedding", "", f"{cpu['bound_without_names']:.2f}", ""],
                ],
            ),
            "",
            "Names are embedded once per collection: a later job over the same collection looks up the names it "
            "already holds (`embed_entity_names`), so only names new to the collection cost anything.",
        ]
    return "\n".join(out)


def vector_tables(
    prep: dict[str, Any], results: list[dict[str, Any]], skipped: list[tuple[str, int]], args: argparse.Namespace
) -> str:
    out = [
        f"### 2. Vector top-{TOP_K} query latency (real SciFact query embeddings)",
        "",
        f"Points: the first {prep['real_vectors']} are real all-MiniLM-L6-v2 embeddings of SciFact chunks; the rest "
        f"are real ones plus Gaussian noise of norm {args.noise}, renormalized (mean cosine to their source shown). "
        f"Points spread round-robin over {N_COLLECTIONS} collections. Filters: `none` = the engine with no filter "
        f"(the kag API never sends this), `all {N_COLLECTIONS}` = `search()` over every collection, `1 coll` = "
        f"`search()` restricted to one collection (10% of the points). Recall@{TOP_K} against exact search "
        "under the same filter. Edge: `optimize()` after loading, measured after it; qdrant-client "
        "local mode (`QdrantClient(path=...)`) has nothing to optimize.",
        "",
    ]
    rows = []
    for r in results:
        lat, rec = r["latency_ms"], r["recall"]
        name = "Qdrant Edge" if r["backend"] == "edge" else "qdrant-client local"
        synth = "" if r["size"] <= r["real"] else f" (cos {r['synth_cos']:.2f})"
        load = f"{r['upsert_s']:.1f}"
        opt = f"{r['optimize_s']:.1f}" if r["backend"] == "edge" else "-"
        rows.append(
            [
                name,
                f"{r['size']:,}",
                f"{r['real']:,} + {r['size'] - r['real']:,}{synth}",
                r["queries"],
                load,
                opt,
                f"{lat['none']['p50']:.2f} / {lat['none']['p95']:.2f}",
                f"{lat['all']['p50']:.2f} / {lat['all']['p95']:.2f}",
                f"**{lat['one']['p50']:.2f}** / {lat['one']['p95']:.2f}",
                f"{rec['none']:.2f} / {rec['all']:.2f} / {rec['one']:.2f}",
            ]
        )
    for backend, size in skipped:
        rows.append(
            [
                "qdrant-client local" if backend == "client" else backend,
                f"{size:,}",
                "not run",
                "",
                f"capped by `--client-max-size {args.client_max_size}`",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    out.append(
        table(
            [
                "backend",
                "points",
                "real + synthetic",
                "queries",
                "load s",
                "optimize s",
                "none p50/p95 ms",
                f"all {N_COLLECTIONS} p50/p95 ms",
                "1 coll p50/p95 ms",
                "recall none/all/1",
            ],
            rows,
        )
    )
    edge_big = [r for r in results if r["backend"] == "edge" and r["size"] == max(args.sizes)]
    if edge_big:
        p50 = edge_big[0]["latency_ms"]["one"]["p50"]
        verdict = "met" if p50 <= 5 else "**missed**"
        out += [
            "",
            f"Target: Edge filtered top-{TOP_K} p50 ≤ 5 ms at {max(args.sizes):,} points: {p50:.2f} ms, {verdict}. "
            f"Edge after optimize: {edge_big[0]['edge_stats']}.",
        ]
    if skipped:
        out += [
            "",
            f"qdrant-client local mode was capped at {args.client_max_size:,} points (`--client-max-size`): it "
            "upserts ~60 s per 50k points and answers filtered queries in ~0.5 s at 50k, so larger sizes would "
            "take most of the time budget. Pass `--client-max-size 100000` to measure them.",
        ]
    return "\n".join(out)


def memory_table(ingest: dict[str, Any] | None, results: list[dict[str, Any]]) -> str:
    rows = []
    if ingest is not None:
        rows.append(
            [
                f"ingestion ({ingest['documents']} docs, all rounds; models loaded)",
                f"{ingest['peak_rss_mb']:.0f}",
                f"{ingest['phase_seconds']:.0f}",
            ]
        )
    for r in results:
        name = "Qdrant Edge" if r["backend"] == "edge" else "qdrant-client local"
        rows.append(
            [
                f"vectors: {name}, {r['size']:,} points (incl. the harness's float32 copy)",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['phase_seconds']:.0f}",
            ]
        )
    return "### 3. Peak memory (RSS high-water mark, one subprocess per phase)\n\n" + table(
        ["phase", "peak RSS MB", "phase seconds"], rows
    )


def main_run(args: argparse.Namespace) -> None:
    import torch

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="kag-bench-"))
    parts: list[str] = [header(torch.get_num_threads()), ""]
    print(parts[0] + "\n", flush=True)
    results: list[dict[str, Any]] = []
    ingest: dict[str, Any] | None = None
    try:
        if not args.skip_ingest:
            ingest = run_phase(args, work, "ingest")
            text = ingest_tables(ingest)
            parts += [text, ""]
            print(text + "\n", flush=True)
        prep = run_phase(args, work, "prep")
        skipped: list[tuple[str, int]] = []
        for size in args.sizes:
            for backend in ("edge", "client"):
                if backend == "client" and size > args.client_max_size:
                    skipped.append((backend, size))
                    log(f"vectors: qdrant-client local mode at {size} points skipped (--client-max-size)")
                    continue
                results.append(run_phase(args, work, "vectors", "--backend", backend, "--size", str(size)))
        text = vector_tables(prep, results, skipped, args)
        parts += [text, ""]
        print(text + "\n", flush=True)
        text = memory_table(ingest, results)
        total = time.perf_counter() - started
        text += f"\n\nTotal benchmark time: {total / 60:.1f} min."
        parts.append(text)
        print(text, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_ingest.md").write_text("\n".join(parts) + "\n")
        payload = {"ingest": ingest, "vectors": results, "args": {k: str(v) for k, v in vars(args).items()}}
        (args.out / "bench_ingest.json").write_text(json.dumps(payload, indent=2, default=str))
        log(f"wrote {args.out / 'bench_ingest.md'} and bench_ingest.json")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="BEIR corpus.jsonl, queries.jsonl beside it (default $EVALDATA/scifact/corpus.jsonl); "
        "relative paths resolve against the repo root",
    )
    parser.add_argument("--limit", type=int, default=1000, help="documents ingested (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved ingestion rounds; medians are reported")
    parser.add_argument(
        "--sizes",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[10_000, 100_000],
        help="vector index sizes in points (default 10000,100000)",
    )
    parser.add_argument("--queries", type=int, default=200, help="SciFact queries timed per index (default 200)")
    parser.add_argument(
        "--real-vectors", type=int, default=2000, help="least real chunk embeddings before synthesizing (default 2000)"
    )
    parser.add_argument("--noise", type=float, default=0.5, help="norm of the noise added to synthesized points")
    parser.add_argument(
        "--client-max-size",
        type=int,
        default=10_000,
        help="largest size run on qdrant-client local mode, which is slow (default 10000)",
    )
    parser.add_argument(
        "--client-queries",
        type=int,
        default=50,
        help="queries timed on qdrant-client local mode, whose filtered queries take ~0.1-1 s (default 50)",
    )
    parser.add_argument("--skip-ingest", action="store_true", help="only the vector benchmark")
    parser.add_argument("--out", type=Path, default=None, help="also write bench_ingest.md and .json here")
    parser.add_argument("--keep", action="store_true", help="keep the temp work dir")
    # internal: one phase in a subprocess
    parser.add_argument("--phase", choices=["ingest", "prep", "vectors"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=["edge", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.corpus is None:
        from pipelines.evaluation.datasets import evaldata

        args.corpus = evaldata("scifact") / "corpus.jsonl"
    if not args.corpus.is_absolute():
        args.corpus = (REPO / args.corpus).resolve()
    if not args.corpus.exists():
        parser.error(f"corpus not found: {args.corpus}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase is None:
        main_run(args)
        return
    phases: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
        "ingest": phase_ingest,
        "prep": phase_prep,
        "vectors": phase_vectors,
    }
    result = phases[args.phase](args, args.workdir)
    args.result.write_text(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
