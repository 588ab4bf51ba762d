"""Admission control: the rate limit's X-RateLimit-* headers, the generation gate's early refusal, and
metrics of requests refused before routing."""

from __future__ import annotations

import asyncio

import pytest

from kag.api.limits import GenerationGate, RateLimiter
from kag.errors import OverloadedError, RateLimitedError
from kag.keys import KeyStore
from tests.kag.api.conftest import Api
from tests.kag.api.test_errors import app_with, envelope


def test_every_answer_to_a_limited_key_carries_the_rate_limit_headers(api: Api) -> None:
    with app_with(api, api_rate_limit_per_minute=6, api_rate_limit_burst=3) as (c, h):
        seen = []
        for _ in range(3):
            r = c.get("/v1/me", headers=h)
            assert r.status_code == 200
            seen.append((r.headers["x-ratelimit-limit"], int(r.headers["x-ratelimit-remaining"])))
        assert seen == [("6", 2), ("6", 1), ("6", 0)]
        r = c.get("/v1/me", headers=h)
        envelope(r, 429, "rate_limited")
        assert r.headers["x-ratelimit-limit"] == "6" and r.headers["x-ratelimit-remaining"] == "0"
        # the bucket refills at 6/min: full again (3 tokens) within 30 s, the next one within 10 s
        assert 1 <= int(r.headers["retry-after"]) <= 10 <= int(r.headers["x-ratelimit-reset"]) <= 30
        # an error after the limit check (404 of a route that exists) carries them too
        r = c.get("/v1/documents/nope", headers=api.h("reader"))
        assert r.status_code == 404 and r.headers["x-ratelimit-remaining"] == "2"
    # no limit, no headers
    store = KeyStore(api.runtime.stores.ledger)
    _, unlimited = store.create("unlimited-headers", "reader", ["hr"], rate_limit_per_minute=0)
    with app_with(api, api_rate_limit_per_minute=6, api_rate_limit_burst=3) as (c, h):
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {unlimited}"})
        assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers
        assert "x-ratelimit-limit" not in c.get("/healthz").headers


def test_rate_limiter_state_is_what_the_headers_say() -> None:
    now = [0.0]
    limiter = RateLimiter(60, 2, clock=lambda: now[0])
    key = type("Key", (), {"id": "k", "rate_limit_per_minute": None})()
    first = limiter.check(key)  # type: ignore[arg-type]
    assert first is not None and (first.limit, first.remaining, first.reset_s) == (60, 1, 1)
    limiter.check(key)  # type: ignore[arg-type]
    with pytest.raises(RateLimitedError) as refused:
        limiter.check(key)  # type: ignore[arg-type]
    assert refused.value.retry_after == 1
    now[0] = 1.0
    assert limiter.check(key).remaining == 0  # type: ignore[arg-type, union-attr]


def test_body_over_the_limit_is_counted_under_its_route(api: Api) -> None:
    with app_with(api, api_max_request_mb=0.001) as (c, h):
        envelope(c.post("/v1/search", json={"query": "x" * 3000}, headers=h), 413, "payload_too_large")
        c.post("/v1/nothing/here", headers=h)
        text = c.get("/metrics").text
    assert 'kag_http_requests_total{method="POST",route="/v1/search",status="413"} 1.0' in text
    assert 'route="unmatched",status="404"' in text


def test_gate_refuses_at_once_what_cannot_be_answered_before_the_deadline() -> None:
    async def scenario() -> None:
        now = [100.0]
        gate = GenerationGate(1, 8, 60.0, clock=lambda: now[0])
        measured = await gate.acquire(deadline=106.0)
        now[0] += 0.2
        measured.release()  # an answer takes 0.2 s: the estimate from now on
        running = await gate.acquire(deadline=now[0] + 6)
        in_line = asyncio.ensure_future(gate.acquire(deadline=now[0] + 10))  # 0.2 s wait + 0.2 s: in time
        await asyncio.sleep(0)
        assert (gate.running, gate.waiting) == (1, 1)
        # two ahead (0.4 s) and its own 0.2 s do not fit in 0.5 s: refused at once, the line unchanged
        with pytest.raises(OverloadedError) as refused:
            await gate.acquire(deadline=now[0] + 0.5)
        assert "would take about 0.6s" in refused.value.message and "times out in 0.5s" in refused.value.message
        assert refused.value.retry_after >= 1
        # a stream needs only its turn (0.4 s) before the deadline, not the whole answer
        with pytest.raises(OverloadedError):
            await gate.acquire(deadline=now[0] + 0.39, whole=False)
        # in time by the estimate, it waits, but never past what its deadline leaves for its own answer
        with pytest.raises(OverloadedError) as waited:
            await gate.acquire(deadline=now[0] + 0.8)
        assert "waited 0.6s" in waited.value.message
        assert gate.waiting == 1
        running.release()
        (await in_line).release()
        assert (gate.running, gate.waiting) == (0, 0)

    asyncio.run(scenario())
