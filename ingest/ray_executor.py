"""Ray executor: parsing, chunking and graph extraction as Ray tasks, embedding on an actor pool.

Why Ray Core (tasks + actors) and not Ray Data: the unit of work is a file whose result is a
nested record (parsed text, chunks, graph), not a table row; Ray Data would convert it to Arrow
and back and pull in pandas/pyarrow, and its ordering and per-row error semantics would need
configuring to match the in-process path. With tasks the driver keeps exactly the in-process
semantics: results come back in file order, per-file errors are values, and the driver writes
every batch through the same index stage (`ingest.stages.embed`).

Data flow per job (the driver is the `kag ingest` process, or an API job runner):

    driver: discover files -> look up their ledger state in windows of files
    cluster: prepare_file task per file (read, sha256, parse, chunk); unchanged files return at
             once without parsing
    driver: collect results in file order -> batches of ~KAG_INDEX_BATCH_SIZE chunks
    cluster: EmbedActor.embed(texts) on an actor pool (one GPU each when the cluster has GPUs)
    driver: write the batch (ledger rows, Qdrant, lexical index, mark indexed)
    driver: stage 2 (graph extraction) over the indexed documents, `ingest.stages.graph`

Fault tolerance: a task whose worker dies is re-run by Ray (`max_retries`); an embedding actor
that dies is restarted and its call re-run (`max_restarts`, `max_task_retries`). Workers write
nothing, so a re-run cannot duplicate anything; the driver's writes are idempotent upserts keyed
by deterministic ids. A file that kills its worker on every attempt (a parser crash) becomes a
per-file error `worker_crashed`, and the job goes on.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.protocols import FileError, FilePreparer, Item, JobSource, KnownDocument, Prepared, embedding_text, title_of
from kag.errors import ConfigurationError, ExecutorError, KagError, MissingDependencyError

if TYPE_CHECKING:
    from ingest.spec import PrepareSpec
    from ingest.stages.prepare import Preparer

log = logging.getLogger("kag.ingest.ray")

RAY_HINT = "install it with `pip install 'kag[ray]'` (make install does)"

#: per worker process: components built once from a spec and reused by every task it runs
_PREPARERS: dict[PrepareSpec, Preparer] = {}


def import_ray() -> Any:
    """The `ray` module, or an error that names the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("the Ray executor needs the `ray` package", hint=RAY_HINT) from exc
    return ray


def prepare_file(spec: PrepareSpec, path: str, collection: str, known: KnownDocument | None) -> Item:
    """Ray task body: prepare one file with this worker's cached components."""
    preparer = _PREPARERS.get(spec)
    if preparer is None:
        preparer = _PREPARERS[spec] = spec.build_preparer()
    return preparer.prepare(Path(path), collection, known)


class EmbedActor:
    """Ray actor body: one embedding model, loaded once, on the GPU Ray assigned (if any)."""

    def __init__(self, spec: PrepareSpec, device: str | None) -> None:
        self.embedder = spec.build_embedder(device)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed(texts)

    def ready(self) -> int:
        return self.embedder.dim


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear error: `ray.init` waits minutes for an address where nothing listens."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigurationError(
            f"cannot read the Ray address {address!r}", hint="use auto, HOST:PORT or ray://HOST:PORT (KAG_RAY_ADDRESS)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorError(
            f"cannot connect to the Ray cluster at {address}: {exc}",
            hint="check KAG_RAY_ADDRESS and that `ray start --head` runs there (GCS port 6379, client port 10001)",
        ) from exc


class RayExecutor:
    """Fans parsing, chunking and embedding out over a Ray cluster."""

    name = "ray"

    def __init__(
        self,
        spec: PrepareSpec,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        max_in_flight_per_cpu: int = 16,
        embed_actors: int | None = None,
        embed_gpus: float | None = None,
        task_retries: int = 3,
    ) -> None:
        if max_in_flight_per_cpu < 1 or task_retries < 0:
            raise ConfigurationError("KAG_RAY_MAX_IN_FLIGHT must be >= 1 and KAG_RAY_TASK_RETRIES >= 0")
        if embed_actors is not None and embed_actors < 1:
            raise ConfigurationError("KAG_RAY_EMBED_ACTORS must be >= 1")
        self.spec = spec
        self.address = address
        self.num_cpus = num_cpus
        self.max_in_flight_per_cpu = max_in_flight_per_cpu
        self.embed_actors = embed_actors
        self.embed_gpus = embed_gpus
        self.task_retries = task_retries
        self._ray: Any = None
        self._started_ray = False
        self._actors: list[Any] = []

    # -- cluster ---------------------------------------------------------------------------

    def connect(self) -> Any:
        """Join (or start) the Ray cluster once; reuses a session the caller already started."""
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        if not ray.is_initialized():
            if self.address not in (None, "auto", "local"):
                _check_reachable(self.address)
            kwargs: dict[str, Any] = {"address": self.address}
            if self.address is None:  # a new local instance: no dashboard, worker logs stay in Ray's log dir
                kwargs.update(include_dashboard=False, log_to_driver=False, num_cpus=self.num_cpus)
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a new local instance"
                raise ExecutorError(
                    f"cannot connect to the Ray cluster at {where}: {exc}",
                    hint="check KAG_RAY_ADDRESS (`auto`, HOST:6379 or ray://HOST:10001) and that `ray start` "
                    "is running there",
                ) from exc
            self._started_ray = True
        self._ray = ray
        return ray

    def cluster_cpus(self) -> int:
        return max(1, int(self.connect().cluster_resources().get("CPU", 1)))

    def _embedders(self) -> list[Any]:
        if self._actors:
            return self._actors
        ray = self.connect()
        gpus_in_cluster = float(ray.cluster_resources().get("GPU", 0))
        gpus = self.embed_gpus if self.embed_gpus is not None else (1.0 if gpus_in_cluster >= 1 else 0.0)
        if gpus > 0 and gpus_in_cluster == 0:
            raise ConfigurationError(
                f"KAG_RAY_EMBED_GPUS={gpus} but the Ray cluster has no GPU", hint="unset it to embed on CPUs"
            )
        count = self.embed_actors or (max(1, int(gpus_in_cluster // gpus)) if gpus > 0 else 1)
        actor_cls = ray.remote(EmbedActor).options(
            num_cpus=1,
            num_gpus=gpus,
            max_restarts=self.task_retries,
            max_task_retries=self.task_retries,
        )
        device = "cuda" if gpus > 0 else None
        self._actors = [actor_cls.remote(self.spec, device) for _ in range(count)]
        log.info("embedding actors started", extra={"actors": count, "gpus_each": gpus})
        return self._actors

    def close(self) -> None:
        """Stop the embedding actors, and Ray itself when this executor started it."""
        ray, self._ray = self._ray, None
        if ray is None:
            return
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # an actor that is already gone is fine
                pass
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- one job ---------------------------------------------------------------------------

    def items(
        self,
        source: JobSource,
        preparer: FilePreparer,
        files: Sequence[Path],
        collection: str,
        batch_chunks: int,
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[Item]:
        """Items in file order, each batch's embedded by an actor; `preparer` is not used: workers
        build their own from the spec."""
        ray = self.connect()
        actors = self._embedders()
        prepare = ray.remote(prepare_file).options(num_cpus=1, max_retries=self.task_retries)
        spec_ref = ray.put(self.spec)
        window = self.max_in_flight_per_cpu * self.cluster_cpus()

        pending: collections.deque[tuple[Path, Any]] = collections.deque()
        embedding: collections.deque[tuple[list[Item], Any]] = collections.deque()
        next_files = iter(files)
        turn = itertools.cycle(range(len(actors)))
        batch: list[Item] = []
        size = 0

        def stopped() -> bool:
            return should_stop is not None and should_stop()

        def submit_more() -> None:
            room = window - len(pending)
            if room <= 0 or stopped():
                return
            paths = list(itertools.islice(next_files, room))
            if not paths:
                return
            known = source.known_documents(collection, paths)
            for path in paths:
                doc = known.get(str(path.resolve()))
                pending.append((path, prepare.remote(spec_ref, str(path), collection, doc)))

        def send_batch() -> None:
            nonlocal batch, size
            texts = [
                embedding_text(title_of(item), c.text, self.spec.embed_title)
                for item in batch
                if isinstance(item, Prepared)
                for c in item.chunks
            ]
            ref = actors[next(turn)].embed.remote(texts) if texts else None
            embedding.append((batch, ref))
            batch, size = [], 0

        def receive_batch() -> list[Item]:
            items, ref = embedding.popleft()
            if ref is None:
                return items
            vectors = self._get(ref, "embedding a batch")
            out: list[Item] = []
            offset = 0
            for item in items:
                if isinstance(item, Prepared):
                    n = len(item.chunks)
                    item = replace(item, vectors=vectors[offset : offset + n])
                    offset += n
                out.append(item)
            return out

        try:
            submit_more()
            while pending:
                path, ref = pending.popleft()
                item = self._prepared(path, ref)
                submit_more()
                batch.append(item)
                if isinstance(item, Prepared):
                    size += len(item.chunks)
                if size >= batch_chunks:
                    send_batch()
                    # one batch per actor in flight, one more queued: the GPUs stay busy while we write
                    if len(embedding) > len(actors):
                        yield from receive_batch()
            if batch:
                send_batch()
            while embedding:
                yield from receive_batch()
        finally:
            for _path, ref in pending:
                ray.cancel(ref)

    def _prepared(self, path: Path, ref: Any) -> Item:
        """One file's result; a file whose worker died on every attempt is a per-file error."""
        ray = self._ray
        try:
            return ray.get(ref)  # type: ignore[no-any-return]
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            log.warning("worker died on every attempt at a file", extra={"path": str(path)})
            return FileError(
                str(path),
                "worker_crashed",
                f"the Ray worker preparing {path} died {self.task_retries + 1} times "
                f"({exc.__class__.__name__}); the file may crash its parser",
            )
        except ray.exceptions.RayTaskError as exc:
            raise self._unwrap(exc, f"preparing {path}") from exc

    def _get(self, ref: Any, action: str) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            raise self._unwrap(exc, action) from exc
        except ray.exceptions.RayError as exc:
            raise ExecutorError(
                f"the Ray cluster failed while {action}: {exc.__class__.__name__}: {exc}",
                hint="check the cluster (`ray status`); the job can be re-run, finished work is kept",
            ) from exc

    @staticmethod
    def _unwrap(exc: Any, action: str) -> KagError:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, KagError):
            return cause
        return ExecutorError(f"a Ray task failed while {action}: {cause or exc}")
