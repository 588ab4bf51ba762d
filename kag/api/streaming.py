"""Run a blocking iterator (the answer pipeline, a llama.cpp stream) in a thread and consume it from async code."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ThreadStream(Generic[T]):
    """Items of `make_iterator()`, produced in a dedicated thread that starts at once.

    When the consumer stops early (client gone, timeout, cancellation: `close()`, or the stream is
    garbage-collected) the thread stops at the next item and closes the iterator, so a llama.cpp
    stream releases the model instead of running on. `on_done` runs once the thread has ended,
    whatever happened, and even if nobody ever iterated: a queue slot handed over can never leak.
    """

    def __init__(
        self, make_iterator: Callable[[], Iterator[T]], *, on_done: Callable[[], None] | None = None, name: str = "kag"
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._make = make_iterator
        self._on_done = on_done
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _post(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _run(self) -> None:
        end: tuple[str, Any] = ("done", None)
        try:
            iterator = self._make()
            try:
                for item in iterator:
                    if self._stop.is_set():
                        break
                    self._post("item", item)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the consumer, which re-raises it
            end = ("error", exc)
        finally:
            # one callback: `on_done` runs before the consumer can see the end, so a response that
            # has finished has always released its slot
            try:
                self._loop.call_soon_threadsafe(self._end, end)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                if self._on_done is not None:
                    self._on_done()

    def _end(self, end: tuple[str, Any]) -> None:
        try:
            if self._on_done is not None:
                self._on_done()
        finally:
            self._queue.put_nowait(end)

    def close(self) -> None:
        """Ask the thread to stop at the next item."""
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()

    def __aiter__(self) -> ThreadStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        try:
            kind, value = await self._queue.get()
        except BaseException:
            self.close()
            raise
        if kind == "item":
            return value  # type: ignore[no-any-return]
        self._finished = True
        if kind == "error":
            raise value
        raise StopAsyncIteration


def sse(event: str | None, data: Any) -> bytes:
    """One Server-Sent Event with a JSON payload."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def sse_content(events: dict[str, dict[str, Any]], *, example: str) -> dict[str, Any]:
    """The OpenAPI `content` of a text/event-stream response, as each event is read by an SSE parser.

    Under OpenAPI 3.1 the `schema` of an event stream describes one event: `{"event": name, "data": text}`
    (`id`, `retry` when sent). Each event type is one `oneOf` branch naming the JSON schema of its `data`
    (`contentSchema`); an event without an `event:` line is a `message`.
    """
    variants = [
        {
            "title": f"{name} event",
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"const": name},
                "data": {"type": "string", **data},
                "id": {"type": "string"},
                "retry": {"type": "integer"},
            },
        }
        for name, data in events.items()
    ]
    return {"text/event-stream": {"schema": {"oneOf": variants}, "example": example}}


def json_data(ref: str | None = None, **schema: Any) -> dict[str, Any]:
    """The `data` of an event: JSON text whose schema is a component (`ref`) or the given one."""
    content = {"$ref": f"#/components/schemas/{ref}"} if ref else schema
    return {"contentMediaType": "application/json", "contentSchema": content}
