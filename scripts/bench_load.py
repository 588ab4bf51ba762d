"""Load benchmark of the service on loopback: N concurrent clients on /v1/search, then on /v1/ask.

Starts a real `kag serve` over a fresh data dir, uploads the demo corpus (data/), creates one reader
key per client (each key has its own rate-limit bucket, as separate tenants would), then runs each
phase for a fixed time and prints throughput, latency percentiles of successful requests, and the
error, 429 and 503 counts. A 429/503 must carry Retry-After; clients wait that long (at most 1 s)
before their next request. Timeouts are client-side (--timeout) and must stay at zero.

    python scripts/bench_load.py --search-clients 16 --ask-clients 16 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kag.api.live import LiveServer, upload, wait_job  # noqa: E402  (the same launcher the tests use)

QUESTIONS = [
    "How many days of paid time off do employees accrue per month?",
    "What caused incident INC-3107?",
    "What is the Osprey API rate limit?",
    "Which database does the Heron billing service depend on?",
    "Who approves expenses over the travel limit?",
    "How often are laptops replaced?",
    "What does the Wren sensor measure?",
    "How is the on-call rota organised?",
]


@dataclass
class Phase:
    name: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    limited: int = 0  # 429
    overloaded: int = 0  # 503
    timeouts: int = 0
    missing_retry_after: int = 0
    error_samples: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        lat = sorted(self.latencies)

        def pct(p: float) -> str:
            if not lat:
                return "-"
            return f"{lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000:.0f}"

        total = self.ok + self.errors + self.limited + self.overloaded + self.timeouts
        return [
            self.name,
            str(self.clients),
            f"{self.seconds:.0f}",
            str(total),
            str(self.ok),
            f"{self.ok / self.seconds:.1f}",
            pct(50),
            pct(95),
            pct(99),
            str(self.errors),
            str(self.limited),
            str(self.overloaded),
            str(self.timeouts),
            str(self.missing_retry_after),
        ]


async def client_loop(
    phase: Phase, url: str, key: str, body_for: object, deadline: float, timeout: float, worker: int
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    i = worker
    async with httpx.AsyncClient(timeout=timeout) as client:
        while time.monotonic() < deadline:
            body = body_for(i)  # type: ignore[operator]
            i += phase.clients
            started = time.monotonic()
            try:
                r = await client.post(url, json=body, headers=headers)
            except httpx.TimeoutException:
                phase.timeouts += 1
                continue
            except httpx.HTTPError as exc:
                phase.errors += 1
                phase.error_samples.append(repr(exc))
                continue
            elapsed = time.monotonic() - started
            if r.status_code == 200:
                phase.ok += 1
                phase.latencies.append(elapsed)
            elif r.status_code in (429, 503):
                if r.status_code == 429:
                    phase.limited += 1
                else:
                    phase.overloaded += 1
                retry_after = r.headers.get("retry-after")
                if retry_after is None:
                    phase.missing_retry_after += 1
                await asyncio.sleep(min(float(retry_after or 1), 1.0))
            else:
                phase.errors += 1
                phase.error_samples.append(f"{r.status_code} {r.text[:200]}")


async def run_phase(phase: Phase, url: str, keys: list[str], body_for: object, timeout: float) -> None:
    deadline = time.monotonic() + phase.seconds
    await asyncio.gather(
        *(client_loop(phase, url, keys[w], body_for, deadline, timeout, w) for w in range(phase.clients))
    )


def table(phases: list[Phase]) -> str:
    head = [
        "endpoint",
        "clients",
        "s",
        "requests",
        "ok",
        "ok/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "429",
        "503",
        "timeouts",
        "503/429 w/o Retry-After",
    ]
    rows = [head] + [p.row() for p in phases]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search-clients", type=int, default=16)
    parser.add_argument("--ask-clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--timeout", type=float, default=150.0, help="client timeout per request (s)")
    parser.add_argument("--max-tokens", type=int, default=64, help="KAG_LLM_MAX_TOKENS of the server")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kag-bench-") as tmp:
        env = {"KAG_LLM_MAX_TOKENS": str(args.max_tokens)}
        server = LiveServer(Path(tmp) / "data", env=env)
        clients = max(args.search_clients, args.ask_clients)
        admin = server.create_key("bench-admin", "admin")
        keys = [server.create_key(f"bench-{i}", "reader", "demo", default="demo") for i in range(clients)]
        with server:
            files = sorted(p for p in args.corpus.rglob("*") if p.is_file())
            t0 = time.monotonic()
            job = wait_job(server.url, admin, upload(server.url, admin, "demo", files)["id"], timeout=1200)
            print(
                f"uploaded and ingested {job['documents_added']} documents ({job['chunks_added']} chunks) "
                f"in {time.monotonic() - t0:.1f}s; server: generation queue 8, 1 generation at a time, "
                f"{args.max_tokens} max tokens, 600 requests/min per key",
                flush=True,
            )
            search = Phase("/v1/search", args.search_clients, args.seconds)
            asyncio.run(
                run_phase(
                    search,
                    f"{server.url}/v1/search",
                    keys,
                    lambda i: {"query": QUESTIONS[i % len(QUESTIONS)], "k": 10},
                    args.timeout,
                )
            )
            ask = Phase("/v1/ask", args.ask_clients, args.seconds)
            asyncio.run(
                run_phase(
                    ask,
                    f"{server.url}/v1/ask",
                    keys,
                    lambda i: {"question": QUESTIONS[i % len(QUESTIONS)]},
                    args.timeout,
                )
            )
    print()
    print(table([search, ask]))
    for phase in (search, ask):
        for sample in phase.error_samples[:3]:
            print(f"  {phase.name} error: {sample}")
    verdicts = [
        (
            "/v1/search holds the load with zero errors",
            search.errors == 0
            and search.timeouts == 0
            and search.limited == 0
            and search.overloaded == 0
            and search.ok > 0,
        ),
        (
            "/v1/ask overload is refused with 429/503 + Retry-After, no timeouts",
            ask.timeouts == 0
            and ask.errors == 0
            and ask.missing_retry_after == 0
            and ask.ok > 0
            and (ask.limited + ask.overloaded) > 0,
        ),
    ]
    print()
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if search.latencies:
        print(f"search mean latency {statistics.mean(search.latencies) * 1000:.0f} ms")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
