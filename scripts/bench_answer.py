"""Answer-pipeline benchmark (`make bench`): per-stage latency, kag vs raw llama-cpp-python tokens/s,
and hybrid retrieval latency at 100k chunks. Prints markdown tables.

Absolute times drift on shared machines; the tokens/s ratio is measured in one run with the two
variants interleaved, so it is the figure to compare.

    .venv/bin/python scripts/bench_answer.py [--scifact DIR (default $EVALDATA/scifact)] [--chunks 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bench_ingest import header, log, make_points, percentile, read_jsonl, table  # noqa: E402

STAGES = ("retrieve", "rerank", "generate", "verify", "audit", "total")


def demo_questions() -> list[str]:
    import re

    text = (REPO / "docs" / "demo-questions.md").read_text(encoding="utf-8")
    return re.findall(r"^\d+\.\s+\*\*(.+?)\*\*", text, re.MULTILINE)


def runtime(data_dir: Path, **overrides: Any) -> Any:
    from kag.cli.runtime import Runtime
    from kag.settings import Settings

    return Runtime(Settings(data_dir=data_dir, **overrides))


# --- 1. per-stage latency on the demo corpus ------------------------------------------------


def bench_stages(work: Path, rounds: int) -> tuple[str, str]:
    rt = runtime(work / "demo")
    try:
        report = rt.ingestor.ingest([REPO / "data"], "demo")
        log(f"stages: demo corpus ingested ({report.chunks_added} chunks)")
        questions = demo_questions()
        pipeline = rt.answer_pipeline
        first = pipeline.answer(questions[0], ["demo"])  # warm-up: loads the LLM and the graph
        timings: dict[str, list[float]] = {s: [] for s in STAGES}
        abstained = 0
        for _ in range(rounds):
            for q in questions:
                result = pipeline.answer(q, ["demo"])
                abstained += result.verification.abstained
                for stage in STAGES:
                    timings[stage].append(result.timings.get(stage, 0.0) * 1000)
        n = len(questions) * rounds
        rows = [
            [stage, f"{percentile(v, 50):.1f}", f"{percentile(v, 95):.1f}", f"{statistics.mean(v):.1f}"]
            for stage, v in timings.items()
        ]
        text = (
            f"### Answer pipeline, per-stage latency (ms), {n} answers "
            f"({len(questions)} demo questions x {rounds}; {abstained} abstained)\n\n"
            + table(["stage", "p50", "p95", "mean"], rows)
        )
        return text, first.prompt
    finally:
        rt.close()


# --- 2. tokens/s: kag vs raw llama-cpp-python -----------------------------------------------


def bench_tokens(
    prompt: str, runs: int, max_tokens: int, *, model_path: str | None = None, n_gpu_layers: int = 0
) -> str:
    import llama_cpp

    from pipelines.generate import LlamaGenerator, SamplingParams

    params = SamplingParams(max_tokens=max_tokens)
    kag = LlamaGenerator(model_path, n_ctx=4096, n_gpu_layers=n_gpu_layers, sampling=params)
    kag.warm_up()
    raw = llama_cpp.Llama(
        model_path=kag.model_path,
        n_ctx=4096,
        n_threads=kag.n_threads,
        n_threads_batch=kag.n_threads,
        n_gpu_layers=kag.n_gpu_layers,
        verbose=False,
    )
    kwargs = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_k": params.top_k,
        "top_p": params.top_p,
        "min_p": params.min_p,
        "repeat_penalty": params.repeat_penalty,
        "seed": params.seed,
    }

    def raw_complete(fresh: bool) -> tuple[str, int, float]:
        if fresh:
            raw.reset()  # evaluate the whole prompt, as kag does for exact replay
        t = time.perf_counter()
        out = raw.create_completion(prompt, **kwargs)
        return out["choices"][0]["text"], out["usage"]["completion_tokens"], time.perf_counter() - t

    def raw_stream() -> tuple[str, int, float]:
        raw.reset()
        t = time.perf_counter()
        pieces = [c["choices"][0]["text"] for c in raw.create_completion(prompt, stream=True, **kwargs)]
        text = "".join(pieces)
        return text, kag.count_tokens(text), time.perf_counter() - t

    def kag_complete() -> tuple[str, int, float]:
        c = kag.complete(prompt)
        return c.text, c.completion_tokens, c.seconds

    def kag_stream() -> tuple[str, int, float]:
        t = time.perf_counter()
        text = "".join(kag.stream(prompt))
        return text, kag.count_tokens(text), time.perf_counter() - t

    base_complete, base_stream = "raw create_completion", "raw create_completion(stream=True)"
    variants = {
        base_complete: lambda: raw_complete(True),
        "kag LlamaGenerator.complete": kag_complete,
        base_stream: raw_stream,
        "kag LlamaGenerator.stream": kag_stream,
        "raw, prompt prefix cached between calls": lambda: raw_complete(False),
    }
    baseline = {
        "kag LlamaGenerator.complete": base_complete,
        "kag LlamaGenerator.stream": base_stream,
        base_stream: base_complete,
        "raw, prompt prefix cached between calls": base_complete,
    }
    for fn in variants.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    texts: dict[str, str] = {}
    tokens = 0
    for _ in range(runs):
        for name, fn in variants.items():  # interleaved, so drift hits every variant alike
            text, n, seconds = fn()
            texts[name] = text
            tokens = n
            rates[name].append(n / seconds)
    kag.close()
    raw.close()
    medians = {name: statistics.median(r) for name, r in rates.items()}
    rows = [
        [
            name,
            f"{medians[name]:.1f}",
            f"{min(r):.1f}-{max(r):.1f}",
            f"{medians[name] / medians[baseline[name]]:.3f} vs {baseline[name]}" if name in baseline else "",
        ]
        for name, r in rates.items()
    ]
    same = texts["kag LlamaGenerator.complete"] == texts[base_complete] == texts["kag LlamaGenerator.stream"]
    cached_same = texts["raw, prompt prefix cached between calls"] == texts[base_complete]
    return (
        f"### Generation tokens/s, {Path(kag.model_path).name}, {kag.n_threads} threads, "
        f"{'CPU' if n_gpu_layers == 0 else f'n_gpu_layers={n_gpu_layers}'}, {runs} interleaved runs, "
        f"{kag.count_tokens(prompt)}-token answer prompt, {tokens} tokens out\n\n"
        + table(["variant", "tokens/s median", "range", "ratio"], rows)
        + f"\n\nkag and raw (whole prompt) wrote the same text: {same}; with the prompt prefix cached, raw wrote "
        f"the same text: {cached_same} (kag evaluates the whole prompt every call so that replay is exact)."
    )


# --- 3. hybrid retrieval at scale -------------------------------------------------------------


def _write_scale(rt: Any, rows: Sequence[dict[str, Any]], target_chunks: int) -> tuple[int, int, int, int, float]:
    """Write the base abstracts as many times as it takes to reach target_chunks into every store, then
    embed the entity names as an ingestion job ends; (chunks written, copies, base documents, names
    embedded, seconds the names took)."""
    import numpy as np

    from kag import ids
    from kag.records import ParsedDocument

    ingestor, ledger = rt.ingestor, rt.stores.ledger
    t0 = time.perf_counter()
    base = []
    for row in rows:
        text = f"{row.get('title', '')}\n\n{row.get('text', '')}".strip()
        drafts = ingestor.preparer.chunker.chunk(
            ParsedDocument(text=text, mime_type="text/plain", title=row.get("title"))
        )
        if drafts:
            base.append((row, text, drafts, rt.extractor.extract(drafts)))
    base_texts = [d.text for _, _, drafts, _ in base for d in drafts]
    base_vectors = rt.embedder.embed(base_texts)
    log(f"scale: {len(base)} base documents, {len(base_texts)} chunks embedded in {time.perf_counter() - t0:.0f}s")
    copies = -(-target_chunks // len(base_texts))
    vectors, _ = make_points(np.asarray(base_vectors, dtype=np.float32), copies * len(base_texts), noise=0.3)
    ledger.ensure_collection("bench")
    written, t1 = 0, time.perf_counter()
    for c in range(copies):
        writes = []
        for row, text, drafts, graph in base:
            writes.append(
                ledger.write_document(
                    collection="bench",
                    source_uri=f"scifact/copy{c}/{row['_id']}.txt",
                    sha256=ids.sha256_bytes(f"{c}:{text}".encode()),
                    mime_type="text/plain",
                    title=row.get("title") or row["_id"],
                    text=text,
                    size_bytes=len(text),
                    metadata={},
                    chunks=drafts,
                    graph=graph,
                )
            )
        chunks = [ch for w in writes for ch in w.chunks]
        rt.stores.vectors.upsert(chunks, vectors[written : written + len(chunks)])
        rt.stores.fulltext.add(chunks)
        rt.stores.fulltext.commit()
        ledger.mark_indexed([w.document_id for w in writes])
        written += len(chunks)
        log(f"scale: copy {c + 1}/{copies}, {written} chunks written")
    rt.stores.vectors.flush()
    rt.stores.vectors.optimize()
    log(f"scale: {written} chunks in every store after {time.perf_counter() - t1:.0f}s")
    # what the end of every ingestion job does: each entity's name embedded once
    from kag.stores.graph import embed_entity_names

    t2 = time.perf_counter()
    named = embed_entity_names(ledger, rt.embedder, "bench")
    names_s = time.perf_counter() - t2
    log(f"scale: {named} entity names embedded in {names_s:.0f}s")

    return written, copies, len(base), named, names_s


def bench_scale(
    work: Path, scifact: Path, target_chunks: int, base_docs: int, queries: int, runtimes: Sequence[str] = ("onnx",)
) -> str:
    """Hybrid retrieval latency at `target_chunks`, timed once per embedding runtime (`KAG_EMBEDDING_RUNTIME`)
    over the same corpus, the runtimes interleaved query by query so machine noise hits them alike."""
    from pipelines.retrieve import hydrate

    rows = read_jsonl(scifact / "corpus.jsonl", limit=base_docs)
    # the shipped retrieval settings: the default hybrid runs all three retrievers
    rts = {r: runtime(work / "scale", graph_enabled=True, embedding_runtime=r) for r in runtimes}
    rt = rts[runtimes[0]]
    # a kept --work-dir that already holds this corpus is timed again without rewriting it
    marker = work / "scale" / "written.json"
    params = {"chunks": target_chunks, "base_docs": base_docs}
    kept = json.loads(marker.read_text()) if marker.is_file() else None
    try:
        if kept is not None and kept["params"] == params:
            written, copies, base_count, named, names_s = (
                kept[k] for k in ("written", "copies", "base", "named", "names_s")
            )
            log(f"scale: reusing the {written} chunks written earlier in {marker.parent}")
        else:
            written, copies, base_count, named, names_s = _write_scale(rt, rows, target_chunks)
            marker.write_text(
                json.dumps(
                    {"params": params, "written": written, "copies": copies, "base": base_count}
                    | {"named": named, "names_s": names_s}
                )
            )
        ledger = rt.stores.ledger
        import resource

        entities, relations = ledger.graph_counts("bench")
        t = time.perf_counter()
        links = rt.graph_cache.get("bench")
        load_s = time.perf_counter() - t
        graph_line = (
            f"Graph: {entities} entities, {relations} relations, {links.number_of_edges()} linked pairs; the "
            f"retrieval view loads in {load_s:.1f} s (once, then cached); the {named} entity names were embedded "
            f"in {names_s:.0f} s after the writes (as at the end of an ingestion job)."
        )
        log(graph_line)
        # one set of stores and one loaded graph; each runtime brings its own embedder
        hybrids, clocks = {}, {}
        for name, other in rts.items():
            if other is not rt:
                other._stores, other.__dict__["graph_cache"] = rt.stores, rt.graph_cache
            hybrids[name] = hybrid = other.retriever("hybrid")
            assert set(hybrid.retrievers) == {"dense", "lexical", "graph"}, hybrid.retrievers
            assert other.embedder.runtime_used == name, (name, other.embedder.runtime_used)
            clocks[name] = clock = {r: [] for r in hybrid.retrievers} | {"fused": [], "hydrate": []}
            for r, retriever in hybrid.retrievers.items():
                inner = retriever.retrieve

                def timed(*args: Any, _inner: Any = inner, _values: list = clock[r], **kwargs: Any) -> Any:
                    t = time.perf_counter()
                    try:
                        return _inner(*args, **kwargs)
                    finally:
                        _values.append((time.perf_counter() - t) * 1000)

                retriever.retrieve = timed  # type: ignore[method-assign]
        texts = [q["text"] for q in read_jsonl(scifact / "queries.jsonl")][: queries + 10]
        for hybrid in hybrids.values():
            for q in texts[:10]:
                hybrid.retrieve(q, 10, ["bench"])
        for clock in clocks.values():
            for values in clock.values():
                values.clear()
        for q in texts[10:]:
            for name, hybrid in hybrids.items():
                t = time.perf_counter()
                hits = hybrid.retrieve(q, 10, ["bench"])
                clocks[name]["fused"].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                hydrate(ledger, hits)
                clocks[name]["hydrate"].append((time.perf_counter() - t) * 1000)
        table_rows = []
        for name, clock in clocks.items():
            hybrid = hybrids[name]
            table_rows += [
                [f"{r} retriever (depth {hybrid.depths.get(r, hybrid.depth)})", name, *_pcts(clock[r])]
                for r in hybrid.retrievers
            ]
            table_rows.append(["**hybrid: three retrievers + weighted RRF**", f"**{name}**", *_pcts(clock["fused"])])
            table_rows.append(["hydrate top-10 from the ledger", name, *_pcts(clock["hydrate"])])
        ratio = ""
        if len(clocks) > 1:
            first, *rest = clocks
            ratio = "\n\nhybrid p95, " + "; ".join(
                f"{r} / {first}: {percentile(clocks[r]['fused'], 95) / percentile(clocks[first]['fused'], 95):.2f}"
                for r in rest
            )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        return (
            f"### Hybrid retrieval at {written} chunks ({base_count} SciFact abstracts x {copies} copies, "
            f"{queries} SciFact queries per runtime, interleaved, top-10, no rerank; Qdrant Edge + Tantivy + "
            f"graph over SQLite)\n\n"
            + table(["stage", "embedding runtime (short texts)", "p50 ms", "p95 ms", "p99 ms"], table_rows)
            + ratio
            + f"\n\n{graph_line} Peak RSS of the benchmark {rss:.1f} GiB."
        )
    finally:
        rt.close()


def _pcts(values: Sequence[float]) -> list[str]:
    return [f"{percentile(values, q):.1f}" for q in (50, 95, 99)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, default=None, help="BEIR SciFact folder (default $EVALDATA/scifact)")
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks for the retrieval-at-scale table")
    parser.add_argument("--base-docs", type=int, default=1500, help="SciFact abstracts replicated to --chunks")
    parser.add_argument("--queries", type=int, default=200, help="timed queries at scale")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the demo questions")
    parser.add_argument("--gen-runs", type=int, default=5, help="interleaved runs per generation variant")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--llm-model-path", help="GGUF for the tokens/s table (default: the bundled SmolLM2)")
    parser.add_argument("--n-gpu-layers", type=int, default=0, help="layers offloaded for the tokens/s table")
    parser.add_argument("--skip-scale", action="store_true", help="skip the 100k-chunk retrieval table")
    parser.add_argument("--only-scale", action="store_true", help="only the 100k-chunk retrieval table")
    parser.add_argument(
        "--embedding-runtimes",
        default="onnx,torch",
        help="embedding runtimes timed side by side at scale (KAG_EMBEDDING_RUNTIME values, the first is the "
        "shipped one)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the benchmark's data here (default: a temporary folder); a later run with the same "
        "--chunks and --base-docs times the kept 100k-chunk corpus again instead of rewriting it",
    )
    args = parser.parse_args(argv)

    import torch

    print(header(torch.get_num_threads()) + "\n")
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kag-bench-answer-")))
        else:
            work = args.work_dir
            (work / "scale").mkdir(parents=True, exist_ok=True)
        if not args.only_scale:
            stages, prompt = bench_stages(work, args.rounds)
            print(stages + "\n", flush=True)
            tokens = bench_tokens(
                prompt, args.gen_runs, args.max_tokens, model_path=args.llm_model_path, n_gpu_layers=args.n_gpu_layers
            )
            print(tokens + "\n", flush=True)
        if not args.skip_scale:
            if args.scifact is None:
                from pipelines.evaluation.datasets import evaldata

                args.scifact = evaldata("scifact")
            if not (args.scifact / "corpus.jsonl").is_file():
                raise SystemExit(f"no SciFact corpus at {args.scifact}: pass --scifact DIR or --skip-scale")
            runtimes = [r.strip() for r in args.embedding_runtimes.split(",") if r.strip()]
            print(
                bench_scale(work, args.scifact, args.chunks, args.base_docs, args.queries, runtimes) + "\n",
                flush=True,
            )


if __name__ == "__main__":
    main()
