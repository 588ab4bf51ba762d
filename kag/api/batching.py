"""Micro-batching: concurrent embedding requests join into one forward pass."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np


class MicroBatcher:
    """Collects texts from concurrent callers for up to `max_wait_s` (or `max_batch` texts), embeds them
    in one call of `embed`, and hands each caller its rows.

    One thread owns the model calls, so requests never fight over the cores; a request larger than
    `max_batch` runs as one batch of its own.
    """

    def __init__(
        self,
        embed: Callable[[Sequence[str]], np.ndarray],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self._embed = embed
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._pending: deque[tuple[list[str], Future[np.ndarray]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="kag-embed-batcher", daemon=True)
        self._thread.start()

    def submit(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """A future of the (len(texts), dim) embeddings."""
        future: Future[np.ndarray] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the embedding batcher is closed")
            self._pending.append((list(texts), future))
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[tuple[list[str], Future[np.ndarray]]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            batch = [self._pending.popleft()]
            size = len(batch[0][0])
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                if self._pending:
                    if size + len(self._pending[0][0]) > self.max_batch:
                        break
                    item = self._pending.popleft()
                    batch.append(item)
                    size += len(item[0])
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(timeout=left)
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [(texts, f) for texts, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            texts = [t for group, _ in live for t in group]
            try:
                vectors = self._embed(texts)
            except BaseException as exc:
                for _, future in live:
                    future.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(live), len(texts))
            start = 0
            for group, future in live:
                future.set_result(vectors[start : start + len(group)])
                start += len(group)
