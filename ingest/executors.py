"""Where stage-1 preparation runs: in this process (`local`) or fanned out over a Ray cluster (`ray`).

An executor turns a job's file list into prepared (parsed, chunked, maybe embedded) documents, one
item per file, in file order. The `Ingestor` batches and writes them itself, through the same code
whatever the executor, so both produce the same ledger rows and index entries.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.protocols import Executor, FilePreparer, Item, JobSource, Prepared
from ingest.spec import PrepareSpec
from kag.errors import ConfigurationError

if TYPE_CHECKING:
    from kag.settings import Settings

__all__ = ["EXECUTORS", "Executor", "InProcessExecutor", "PrepareSpec", "make_executor"]

EXECUTORS = ("local", "ray")

#: files whose ledger state is read in one query
KNOWN_WINDOW = 256


class InProcessExecutor:
    """Parse and chunk in a producer thread while the calling thread embeds and writes."""

    name = "local"

    def items(
        self,
        source: JobSource,
        preparer: FilePreparer,
        files: Sequence[Path],
        collection: str,
        batch_chunks: int,
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[Item]:
        # the two halves overlap instead of adding up; the producer runs at most two batches' worth of
        # chunks ahead of the writer, so memory stays flat, and hands over each file as it is ready
        budget = 2 * batch_chunks
        ready: deque[Item | None] = deque()
        buffered = [0]  # chunks handed over and not yet taken
        cond = threading.Condition()
        failure: list[BaseException] = []
        stop = threading.Event()

        def put(item: Item | None, chunks: int) -> None:
            with cond:
                while buffered[0] >= budget and not stop.is_set():
                    cond.wait(0.1)
                ready.append(item)
                buffered[0] += chunks
                cond.notify_all()

        def produce() -> None:
            try:
                pending = iter(files)
                while window := list(itertools.islice(pending, KNOWN_WINDOW)):
                    known = source.known_documents(collection, window)
                    for path in window:
                        if stop.is_set() or (should_stop is not None and should_stop()):
                            return
                        item = preparer.prepare(path, collection, known.get(str(path.resolve())))
                        put(item, len(item.chunks) if isinstance(item, Prepared) else 0)
            except BaseException as exc:
                failure.append(exc)
            finally:
                with cond:
                    ready.append(None)
                    cond.notify_all()

        producer = threading.Thread(target=produce, name="kag-ingest-prepare", daemon=True)
        producer.start()
        try:
            while True:
                with cond:
                    while not ready:
                        cond.wait()
                    item = ready.popleft()
                    if isinstance(item, Prepared):
                        buffered[0] -= len(item.chunks)
                    cond.notify_all()
                if item is None:
                    break
                yield item
        finally:
            stop.set()
            with cond:
                cond.notify_all()
            producer.join()
        if failure:
            raise failure[0]

    def close(self) -> None:
        """Nothing to release."""


def make_executor(settings: Settings, spec: PrepareSpec, name: str | None = None) -> Executor:
    """The executor a setting (or an explicit `name`, e.g. from an API request) asks for."""
    choice = name or settings.ingest_executor
    if choice == "local":
        return InProcessExecutor()
    if choice == "ray":
        from ingest.ray_executor import RayExecutor

        s = settings
        return RayExecutor(
            spec,
            address=s.ray_address,
            num_cpus=s.ray_num_cpus,
            max_in_flight_per_cpu=s.ray_max_in_flight,
            embed_actors=s.ray_embed_actors,
            embed_gpus=s.ray_embed_gpus,
            task_retries=s.ray_task_retries,
        )
    raise ConfigurationError(
        f"unknown ingestion executor {choice!r}", hint=f"use one of: {', '.join(EXECUTORS)} (KAG_INGEST_EXECUTOR)"
    )
