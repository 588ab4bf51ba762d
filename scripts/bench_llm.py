"""Generator benchmark (`make bench-llm`, part of `make bench`): tokens/s of every installed model of
`kag models list`, through kag's LlamaGenerator and through raw llama-cpp-python on the same prompt,
at 1, 2 and cores-1 threads, on the host as found and under a synthetic load (one busy-loop process
per core). Rounds alternate the order of conditions and of kag/raw, so drift hits both alike.

Prints a markdown table (one row per model, threads, condition) with `os.getloadavg()` at each
measurement, and records each model's kag tokens/s at kag's default thread count, on the host as
found, into the model cache (`bench.json`), which `kag models list` shows.

    .venv/bin/python scripts/bench_llm.py [--models NAME ...] [--rounds 2] [--max-tokens 24] [--no-load]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

# A grounded question in kag's own prompt shape, long enough an answer that decode dominates.
QUESTION = "List the steps of the release process in order, one sentence per step, citing each source."
SOURCES = [
    "Releases start with a freeze of the main branch on Monday; only fixes for blockers are merged after it.",
    "On Tuesday the release manager builds the candidate, tags it rc1 and deploys it to the staging cluster.",
    "Staging runs the full regression suite overnight; any failure sends the candidate back to the freeze step.",
    "On Thursday the on-call engineer promotes the candidate to production in three waves of one third each.",
    "Each wave waits thirty minutes and is rolled back automatically when the error rate rises above 0.5 percent.",
]


def log(message: str) -> None:
    print(f"[bench_llm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_counts(cores: int) -> list[int]:
    """1, 2 and cores-1 threads, deduplicated, none above the cores there are."""
    return sorted({t for t in (1, 2, max(1, cores - 1)) if t <= cores})


def _spin() -> None:  # pragma: no cover - runs in the load processes
    while True:
        pass


@contextmanager
def synthetic_load(processes: int) -> Iterator[None]:
    """One busy-looping process per core for the duration of the block."""
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_spin, daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.0)  # let the scheduler see them before measuring
        yield
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(timeout=5)


@dataclass
class Row:
    model: str
    threads: int
    condition: str  # "as found" or "loaded"
    kag: list[float] = field(default_factory=list)  # tokens/s per run
    raw: list[float] = field(default_factory=list)
    loadavg: list[float] = field(default_factory=list)  # 1-minute load average at each run
    tokens: int = 0
    prompt_tokens: int = 0

    @property
    def kag_median(self) -> float:
        return statistics.median(self.kag) if self.kag else 0.0

    @property
    def raw_median(self) -> float:
        return statistics.median(self.raw) if self.raw else 0.0

    @property
    def ratio(self) -> float:
        return self.kag_median / self.raw_median if self.raw_median else 0.0


class Pair:
    """kag's LlamaGenerator and a raw llama_cpp.Llama on the same file, threads and sampling."""

    def __init__(self, path: str, threads: int, max_tokens: int) -> None:
        import llama_cpp

        from pipelines.generate import ANSWER_INSTRUCTION, LlamaGenerator, SamplingParams

        self.params = SamplingParams(max_tokens=max_tokens)
        self.kag = LlamaGenerator(path, n_ctx=2048, n_threads=threads, sampling=self.params)
        self.kag.warm_up()
        body = "\n\n".join(f"[{i}] (Release Handbook) {text}" for i, text in enumerate(SOURCES, start=1))
        self.prompt = self.kag.render_chat(
            [
                {"role": "system", "content": ANSWER_INSTRUCTION},
                {"role": "user", "content": f"Sources:\n{body}\n\nQuestion: {QUESTION}"},
            ]
        )
        self.prompt_tokens = self.kag.count_tokens(self.prompt)
        self.raw = llama_cpp.Llama(
            model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    def warm_up(self) -> None:
        """One token through each: pages the weights in before anything is timed."""
        self.kag.complete(self.prompt, sampling=self.params.replace(max_tokens=1))
        self.raw.reset()
        self.raw.create_completion(self.prompt, max_tokens=1, temperature=0.0)

    def run_kag(self) -> tuple[int, float]:
        done = self.kag.complete(self.prompt)
        return done.completion_tokens, done.seconds

    def run_raw(self) -> tuple[int, float]:
        p = self.params
        self.raw.reset()  # the whole prompt every time, as kag does for exact replay
        started = time.perf_counter()
        out = self.raw.create_completion(
            self.prompt,
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=p.min_p,
            repeat_penalty=p.repeat_penalty,
            seed=p.seed,
        )
        return int(out["usage"]["completion_tokens"]), time.perf_counter() - started

    def close(self) -> None:
        self.kag.close()
        self.raw.close()


def bench_model(name: str, path: str, threads: Sequence[int], args: argparse.Namespace, cores: int) -> list[Row]:
    rows = {(t, c): Row(name, t, c) for t in threads for c in ("as found", "loaded")}
    pairs = {}
    try:
        for t in threads:
            pairs[t] = Pair(path, t, args.max_tokens)
            pairs[t].warm_up()
        for round_no in range(args.rounds):
            conditions = ["as found", "loaded"] if round_no % 2 == 0 else ["loaded", "as found"]
            for condition in conditions:
                if condition == "loaded" and args.no_load:
                    continue
                with synthetic_load(cores) if condition == "loaded" else _nothing():
                    for t in threads:
                        row = rows[(t, condition)]
                        order = ("kag", "raw") if (round_no + t) % 2 == 0 else ("raw", "kag")
                        for which in order:
                            tokens, seconds = pairs[t].run_kag() if which == "kag" else pairs[t].run_raw()
                            (row.kag if which == "kag" else row.raw).append(tokens / seconds if seconds else 0.0)
                            row.tokens = tokens
                        row.prompt_tokens = pairs[t].prompt_tokens
                        row.loadavg.append(os.getloadavg()[0])
                        log(
                            f"{name} {t} thr {condition} round {round_no + 1}: kag {row.kag[-1]:.1f} "
                            f"raw {row.raw[-1]:.1f} tok/s, load {row.loadavg[-1]:.2f}"
                        )
    finally:
        for pair in pairs.values():
            pair.close()
    return [row for row in rows.values() if row.kag]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def markdown(rows: Sequence[Row], cores: int, max_tokens: int) -> str:
    lines = [
        f"tokens/s = completion tokens / wall time of the completion, prompt evaluation included (median of "
        f"rounds; {max_tokens} tokens max, greedy; host: {cores} cores; 'loaded' = {cores} busy-loop processes "
        "started by this script)",
        "",
        "| model | threads | condition | kag tok/s | raw tok/s | kag/raw | prompt + completion tokens | loadavg 1m |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        loads = ", ".join(f"{x:.2f}" for x in r.loadavg)
        lines.append(
            f"| {r.model} | {r.threads} | {r.condition} | {r.kag_median:.1f} | {r.raw_median:.1f} | "
            f"{r.ratio:.3f} | {r.prompt_tokens} + {r.tokens} | {loads} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from kag.models.llm_cache import ModelCache
    from kag.settings import Settings
    from pipelines.generate import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="Model names (default: every installed one).")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds per condition (alternating order).")
    parser.add_argument("--max-tokens", type=int, default=24, help="Tokens generated per run.")
    parser.add_argument("--threads", type=int, nargs="*", help="Thread counts (default: 1, 2, cores-1).")
    parser.add_argument("--no-load", action="store_true", help="Skip the synthetic-load condition.")
    parser.add_argument("--no-record", action="store_true", help="Do not write results into the model cache.")
    args = parser.parse_args(argv)

    cache = ModelCache(Settings().model_cache_dir)
    cores = cpu_count()
    threads = sorted(set(args.threads)) if args.threads else thread_counts(cores)
    names = args.models or [m.name for m in cache.catalog.values() if cache.installed_path(m) is not None]
    log(f"models {names}, threads {threads}, {cores} cores, loadavg {os.getloadavg()}")
    all_rows: list[Row] = []
    for name in names:
        model = cache.model(name)
        path = cache.ensure(model)
        rows = bench_model(name, str(path), threads, args, cores)
        all_rows += rows
        default = default_threads()
        chosen = next((r for r in rows if r.threads == default and r.condition == "as found"), None)
        if chosen is not None and not args.no_record:
            cache.record_bench(
                name,
                {
                    "tokens_per_s": round(chosen.kag_median, 2),
                    "raw_tokens_per_s": round(chosen.raw_median, 2),
                    "kag_over_raw": round(chosen.ratio, 3),
                    "threads": chosen.threads,
                    "loadavg_1m": chosen.loadavg,
                    "cores": cores,
                    "max_tokens": args.max_tokens,
                    "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "rows": [
                        {
                            "threads": r.threads,
                            "condition": r.condition,
                            "kag_tokens_per_s": round(r.kag_median, 2),
                            "raw_tokens_per_s": round(r.raw_median, 2),
                            "loadavg_1m": r.loadavg,
                        }
                        for r in rows
                    ],
                },
            )
    print(markdown(all_rows, cores, args.max_tokens))
    worst = min((r.ratio for r in all_rows), default=1.0)
    print(f"\nworst kag/raw ratio: {worst:.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
