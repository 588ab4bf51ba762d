"""Admission control: per-key rate limits, the bounded generation queue, body-size limits and timeouts."""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kag.errors import OverloadedError, RateLimitedError
from kag.keys import ApiKey
from kag.units import describe_limit


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    """A key's bucket after one request: what the `X-RateLimit-*` headers of the response say."""

    limit: int  # requests per minute
    remaining: int  # whole requests the bucket holds now
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: float  # seconds until the next request is allowed (0 when one is)

    @property
    def allowed(self) -> bool:
        return self.retry_after_s <= 0

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset_s).encode()),
        ]


class RateLimiter:
    """A token bucket per API key: `burst` requests at once, refilled at `per_minute` / 60 per second."""

    def __init__(
        self, per_minute: int, burst: int, *, clock: Callable[[], float] = time.monotonic, on_limited: Any = None
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._on_limited = on_limited

    def take(self, key: ApiKey) -> RateLimitStatus | None:
        """Take one token for `key` if its bucket has one; the bucket's state either way (None: no limit)."""
        per_minute = self.per_minute if key.rate_limit_per_minute is None else key.rate_limit_per_minute
        if per_minute <= 0:
            return None
        rate = per_minute / 60.0
        capacity = float(max(1, min(self.burst, per_minute)))
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key.id)
            if bucket is None:
                bucket = self._buckets[key.id] = _Bucket(capacity, now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            wait = 0.0
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
            else:
                wait = (1.0 - bucket.tokens) / rate
            tokens = bucket.tokens
        return RateLimitStatus(
            limit=per_minute,
            remaining=int(tokens),
            reset_s=math.ceil((capacity - tokens) / rate),
            retry_after_s=wait,
        )

    def check(self, key: ApiKey) -> RateLimitStatus | None:
        """Take one token for `key`; RateLimitedError (with Retry-After) when its bucket is empty."""
        status = self.take(key)
        if status is not None and not status.allowed:
            self.refuse(status)
        return status

    def refuse(self, status: RateLimitStatus) -> None:
        """Count the refusal and raise its RateLimitedError (a 429 with Retry-After)."""
        if self._on_limited is not None:
            self._on_limited()
        raise RateLimitedError(
            f"rate limit of {status.limit} requests per minute exceeded for this key",
            retry_after=status.retry_after_s,
            hint="wait for Retry-After seconds, or ask an admin for a higher limit",
        )


class RateLimitHeadersMiddleware:
    """Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset` to every answer to a rate-limited key, a 429 or
    any other: the auth dependency leaves the key's `RateLimitStatus` in the request state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def with_headers(message: Message) -> None:
            status = state.get("rate_limit")
            if message["type"] == "http.response.start" and isinstance(status, RateLimitStatus):
                message = {**message, "headers": [*(message.get("headers") or []), *status.headers()]}
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class GenerationSlot:
    """A held place on the model; `release` is idempotent and may be called from any thread's callback."""

    gate: GenerationGate
    started: float
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate._release(self.gate._clock() - self.started)


class GenerationGate:
    """Bounds work on the local LLM: `concurrency` run, at most `queue_size` wait (FIFO), the rest get 503.

    A llama.cpp context decodes one sequence at a time, so requests are not batched into one forward
    pass: they are served in arrival order, and the queue bound turns overload into a fast 503 with
    Retry-After instead of an ever-growing backlog of clients that time out. A request with a deadline
    (its response must start by then, see TimeoutMiddleware) that the line ahead of it and the observed
    time per answer say cannot make it is refused at once the same way, not held until it gets a 504.
    """

    #: the time per answer assumed until one has been measured
    FIRST_GUESS_S = 5.0

    def __init__(
        self,
        concurrency: int,
        queue_size: int,
        timeout_s: float,
        *,
        on_change: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.waiting = 0
        self.running = 0
        self._sem: asyncio.Semaphore | None = None
        self._avg_seconds: float | None = None  # moving average of measured answers
        self._on_change = on_change
        self._clock = clock

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._sem

    @property
    def service_s(self) -> float:
        """The time one answer takes on the model, as measured so far."""
        return self.FIRST_GUESS_S if self._avg_seconds is None else self._avg_seconds

    def expected_wait_s(self) -> float:
        """How long a request arriving now waits for its turn: the line ahead of it, `concurrency` at a time."""
        ahead = self.waiting + self.running - self.concurrency + 1
        return max(0.0, math.ceil(ahead / self.concurrency) * self.service_s) if ahead > 0 else 0.0

    def retry_after(self) -> float:
        ahead = self.waiting + self.running
        return max(1.0, self.service_s * ahead / self.concurrency)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.waiting, self.running)

    def _refuse(self, message: str) -> OverloadedError:
        return OverloadedError(message, retry_after=self.retry_after(), hint="retry after Retry-After seconds")

    async def acquire(self, deadline: float | None = None, *, whole: bool = True) -> GenerationSlot:
        """A slot on the model, waiting in line if allowed; OverloadedError when the line is full or too slow.

        `deadline` (on this gate's clock) is when the response must have started: for a `whole` answer
        (not streamed) that is its end, for a stream its first event. A request that would not make it,
        judged by the line ahead and the measured time per answer, is refused now.
        """
        sem = self._semaphore()
        if self.running >= self.concurrency and self.waiting >= self.queue_size:
            raise self._refuse(
                f"the model is busy: {self.running} generating, {self.waiting} waiting (queue limit {self.queue_size})"
            )
        own = self.service_s if whole else 0.0
        wait_budget = self.timeout_s
        if deadline is not None:
            left = deadline - self._clock()
            expected = self.expected_wait_s()
            if expected + own > left:
                raise self._refuse(
                    f"the model is busy: the answer would take about {expected + own:.1f}s "
                    f"({self.running} generating, {self.waiting} waiting) but the request times out in {left:.1f}s"
                )
            wait_budget = min(wait_budget, left - own)
        self.waiting += 1
        self._changed()
        try:
            await asyncio.wait_for(sem.acquire(), timeout=max(0.0, wait_budget))
        except TimeoutError:
            raise self._refuse(f"waited {wait_budget:.1f}s for the model without getting a turn") from None
        finally:
            self.waiting -= 1
        self.running += 1
        self._changed()
        return GenerationSlot(self, self._clock())

    def _release(self, seconds: float) -> None:
        self.running -= 1
        self._avg_seconds = seconds if self._avg_seconds is None else 0.8 * self._avg_seconds + 0.2 * seconds
        self._semaphore().release()
        self._changed()


# --- ASGI middleware ----------------------------------------------------------------------


def _envelope(status: int, code: str, message: str, hint: str, request_id: str | None) -> bytes:
    body = {
        "error": {
            "code": code,
            "type": code,
            "message": message,
            "hint": hint,
            "status": status,
            "request_id": request_id,
            "details": None,
        }
    }
    return json.dumps(body).encode()


async def _send_error(send: Send, scope: Scope, status: int, code: str, message: str, hint: str) -> None:
    request_id = scope.get("state", {}).get("request_id")
    body = _envelope(status, code, message, hint, request_id)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI passes it on to the 413 envelope unchanged."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(status_code=413, detail=message)
        self.hint = hint


class BodyLimitMiddleware:
    """413 in the error envelope for a body over its limit: at the first read from Content-Length, else while
    reading (a route that reads no body is served as usual)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_max_bytes: int, upload_path: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes
        self.upload_path = re.compile(upload_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and self.upload_path.fullmatch(scope["path"]) is not None
        limit = self.upload_max_bytes if upload else self.max_bytes
        what = "upload" if upload else "request body"
        setting = "KAG_API_MAX_UPLOAD_MB" if upload else "KAG_API_MAX_REQUEST_MB"
        message = f"the {what} is over the limit of {describe_limit(limit)} ({setting})"
        hint = f"send less, or raise {setting}"
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        # a declared length over the limit fails the first read, before a byte is taken: the request is
        # still routed first, so its 413 is counted under its route and passes through the app's handlers
        too_large = declared is not None and declared > limit
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            if too_large:
                raise _BodyTooLarge(message, hint)
            message_ = await receive()
            if message_["type"] == "http.request":
                received += len(message_.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(message, hint)
            return message_

        async def watched_send(message_: Message) -> None:
            nonlocal started
            if message_["type"] == "http.response.start":
                started = True
            await send(message_)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _BodyTooLarge:
            if started:
                raise
            await _send_error(send, scope, 413, "payload_too_large", message, hint)
        except BaseExceptionGroup as group:  # raised inside a task group
            match, rest = group.split(_BodyTooLarge)
            if match is None or rest is not None or started:
                raise
            await _send_error(send, scope, 413, "payload_too_large", message, hint)


class TimeoutMiddleware:
    """504 in the error envelope when no response has started within `timeout_s`; the handler is cancelled."""

    def __init__(self, app: ASGIApp, *, timeout_s: float, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()
        # the generation gate refuses at once what cannot start its response by then
        scope.setdefault("state", {})["deadline"] = time.monotonic() + self.timeout_s

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, watched_send))
        waiter = asyncio.ensure_future(started.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            waiter.cancel()
            raise
        waiter.cancel()
        if not done:
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: B036 - the handler's own end does not matter any more
                pass
            if not started.is_set():
                await _send_error(
                    send,
                    scope,
                    504,
                    "request_timeout",
                    f"no response within {self.timeout_s:.0f}s",
                    "retry later, or raise KAG_API_REQUEST_TIMEOUT_S",
                )
            return
        await task
