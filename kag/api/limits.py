"""Admission control: per-key rate limits, the bounded generation queue, body-size limits and timeouts."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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

    def check(self, key: ApiKey) -> None:
        """Take one token for `key`; RateLimitedError (with Retry-After) when its bucket is empty."""
        per_minute = self.per_minute if key.rate_limit_per_minute is None else key.rate_limit_per_minute
        if per_minute <= 0:
            return
        rate = per_minute / 60.0
        capacity = float(max(1, min(self.burst, per_minute)))
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key.id)
            if bucket is None:
                bucket = self._buckets[key.id] = _Bucket(capacity, now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / rate
        if self._on_limited is not None:
            self._on_limited()
        raise RateLimitedError(
            f"rate limit of {per_minute} requests per minute exceeded for this key",
            retry_after=wait,
            hint="wait for Retry-After seconds, or ask an admin for a higher limit",
        )


@dataclass
class GenerationSlot:
    """A held place on the model; `release` is idempotent and may be called from any thread's callback."""

    gate: GenerationGate
    started: float = field(default_factory=time.monotonic)
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate._release(time.monotonic() - self.started)


class GenerationGate:
    """Bounds work on the local LLM: `concurrency` run, at most `queue_size` wait (FIFO), the rest get 503.

    A llama.cpp context decodes one sequence at a time, so requests are not batched into one forward
    pass: they are served in arrival order, and the queue bound turns overload into a fast 503 with
    Retry-After instead of an ever-growing backlog of clients that time out.
    """

    def __init__(
        self,
        concurrency: int,
        queue_size: int,
        timeout_s: float,
        *,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.waiting = 0
        self.running = 0
        self._sem: asyncio.Semaphore | None = None
        self._avg_seconds = 5.0  # a first guess until real generations are timed
        self._on_change = on_change

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._sem

    def retry_after(self) -> float:
        ahead = self.waiting + self.running
        return max(1.0, self._avg_seconds * ahead / self.concurrency)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.waiting, self.running)

    async def acquire(self) -> GenerationSlot:
        """A slot on the model, waiting in line if allowed; OverloadedError when the line is full or too slow."""
        sem = self._semaphore()
        if self.running >= self.concurrency and self.waiting >= self.queue_size:
            raise OverloadedError(
                f"the model is busy: {self.running} generating, {self.waiting} waiting (queue limit {self.queue_size})",
                retry_after=self.retry_after(),
                hint="retry after Retry-After seconds",
            )
        self.waiting += 1
        self._changed()
        try:
            await asyncio.wait_for(sem.acquire(), timeout=self.timeout_s)
        except TimeoutError:
            raise OverloadedError(
                f"waited {self.timeout_s:.0f}s for the model without getting a turn",
                retry_after=self.retry_after(),
                hint="retry after Retry-After seconds",
            ) from None
        finally:
            self.waiting -= 1
        self.running += 1
        self._changed()
        return GenerationSlot(self)

    def _release(self, seconds: float) -> None:
        self.running -= 1
        self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * seconds
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

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodyLimitMiddleware:
    """413 in the error envelope for a body over its limit: at once from Content-Length, else while reading."""

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
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None and declared > limit:
            await _send_error(send, scope, 413, "payload_too_large", message, f"send less, or raise {setting}")
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message_ = await receive()
            if message_["type"] == "http.request":
                received += len(message_.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(message)
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
            await _send_error(send, scope, 413, "payload_too_large", message, f"send less, or raise {setting}")
        except BaseExceptionGroup as group:  # raised inside a task group
            match, rest = group.split(_BodyTooLarge)
            if match is None or rest is not None or started:
                raise
            await _send_error(send, scope, 413, "payload_too_large", message, f"send less, or raise {setting}")


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
