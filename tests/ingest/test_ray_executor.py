"""The Ray executor against the in-process one: same ledger rows, same index contents, and a job whose
Ray workers are killed mid-way still converges. Ray runs as a real local cluster (`ray.init(num_cpus=2)`),
one session for the whole module."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from ingest import upkeep
from ingest.executors import InProcessExecutor, PrepareSpec, make_executor
from ingest.pipeline import Ingestor, JobReport
from ingest.ray_executor import RayExecutor
from kag.ledger.models import Base
from kag.stores.bundle import Stores, open_stores
from tests.ingest.corpus_factory import make_bad_files

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SPEC = PrepareSpec(chunk_size=128, chunk_overlap=16, embedding_batch_size=32, fingerprint="ray-test")
BATCH_CHUNKS = 48

#: columns that legitimately differ between two runs of the same input: when rows were written,
#: and which job (id, executor) wrote them. Everything else must be byte-identical.
VOLATILE = {
    "documents": {"created_at", "updated_at", "job_id"},
    "relations": {"created_at"},
    "collections": {"created_at"},
    "ingest_jobs": {"id", "executor", "started_at", "finished_at", "heartbeat_at"},
    "job_errors": {"job_id", "created_at"},
}
QUERIES = ["paid time off", "Heron billing duplicate charges", "certificate expiry", "Osprey rate limit", "robot"]


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus plus files that must fail, each alone, with its own error."""
    root = tmp_path_factory.mktemp("ray") / "corpus"
    shutil.copytree(ROOT / "data", root)
    make_bad_files(root / "bad")
    return root


@pytest.fixture(scope="module")
def components(embedder: Any) -> Any:
    """Stage 1's preparer and stage 2's extractor, as a Ray worker and the driver build them."""
    preparer = SPEC.build_preparer()
    return SimpleNamespace(chunker=preparer.chunker, registry=preparer.registry, extractor=SPEC.build_extractor())


@pytest.fixture(scope="module")
def ray_executor(ray_session: Any) -> Iterator[RayExecutor]:
    executor = RayExecutor(SPEC, task_retries=3)
    yield executor
    executor.close()


def open_embedded(data_dir: Path, dim: int) -> Stores:
    return open_stores(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'ledger.sqlite3'}", dim=dim)


def open_servers(data_dir: Path, dim: int, postgres_url: str) -> Stores:
    """PostgreSQL ledger, qdrant-client vectors and Qdrant BM25 lexical index (local mode for both)."""
    from qdrant_client import QdrantClient

    from kag.stores.fulltext_qdrant import QdrantBM25Index
    from kag.stores.vector import QdrantClientVectorIndex

    stores = open_stores(data_dir=data_dir, database_url=postgres_url, dim=dim)
    stores.vectors.close()
    stores.fulltext.close()
    client = QdrantClient(path=str(data_dir / "qdrant-local"))
    stores.vectors = QdrantClientVectorIndex(client, "kag_chunks", dim)
    stores.fulltext = QdrantBM25Index(client, "kag_lexical", owns_client=True)
    return stores


Run = tuple[JobReport, list[tuple[Any, ...]]]


def run(stores: Stores, embedder: Any, components: Any, executor: Any, corpus: Path) -> Run:
    """Ingest the corpus: the job report and every progress-listener call, in order."""
    ingestor = Ingestor(
        stores,
        embedder,
        components.chunker,
        components.registry,
        extractor=components.extractor,
        max_file_bytes=SPEC.max_file_bytes,
        batch_chunks=BATCH_CHUNKS,
        fingerprint=SPEC.fingerprint,
        executor=executor,
    )
    recorder = Recorder()
    report = ingestor.ingest([corpus], "demo", listener=recorder)
    return report, recorder.calls


class Recorder:
    """A ProgressListener that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_start(self, files_total: int) -> None:
        self.calls.append(("start", files_total))

    def on_file_done(self, path: str, chunks: int, ok: bool) -> None:
        self.calls.append(("done", path, chunks, ok))


def ledger_rows(stores: Stores) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ledger table, minus the volatile columns, in primary-key order."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    with stores.ledger.session() as s:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if c.name not in VOLATILE.get(table.name, set())]
            rows = s.execute(select(*columns).order_by(*table.primary_key.columns)).all()
            dump[table.name] = sorted(tuple(r) for r in rows)
    return dump


def vectors_of(stores: Stores) -> dict[str, np.ndarray]:
    """chunk id -> stored vector, read from whichever Qdrant backend holds them."""
    index: Any = stores.vectors
    found: dict[str, np.ndarray] = {}
    offset = None
    while True:
        if hasattr(index, "_shard"):
            q = index._q
            records, offset = index._shard.scroll(
                q.ScrollRequest(offset=offset, limit=256, with_payload=True, with_vector=True)
            )
        else:
            records, offset = index._client.scroll(
                index.collection_name, limit=256, offset=offset, with_payload=True, with_vectors=True
            )
        for r in records:
            vector = r.vector["dense"] if isinstance(r.vector, dict) else r.vector
            found[str(r.payload["chunk_id"])] = np.asarray(vector, dtype=np.float32)
        if offset is None:
            return found


def lexical_hits(stores: Stores) -> dict[str, list[tuple[str, float]]]:
    """Every hit of each query, best first; equal scores by chunk id, since an engine orders ties by
    its internal layout (Tantivy's segments, merged in the background), which is not part of the state."""
    found = {}
    for query in QUERIES:
        hits = stores.fulltext.search(query, 1000, ["demo"])
        found[query] = sorted(((h.chunk_id, round(h.score, 4)) for h in hits), key=lambda hit: (-hit[1], hit[0]))
    return found


@pytest.fixture(scope="module")
def local_run(
    tmp_path_factory: pytest.TempPathFactory, embedder: Any, components: Any, corpus: Path
) -> Iterator[tuple[Run, Stores]]:
    stores = open_embedded(tmp_path_factory.mktemp("local"), embedder.dim)
    result = run(stores, embedder, components, InProcessExecutor(), corpus)
    yield result, stores
    stores.close()


def assert_same_report(ray_run: Run, local_run: Run) -> None:
    (ray_report, ray_progress), (local_report, local_progress) = ray_run, local_run
    assert ray_report.status == local_report.status == "completed"
    assert ray_report.counts() == local_report.counts()
    assert ray_report.errors == local_report.errors  # same paths, codes and messages, same order
    # the same progress calls in the same order: start, then every file with its chunk count
    assert ray_progress == local_progress
    assert len(ray_progress) == ray_report.files_total + 1
    assert {e.code for e in ray_report.errors} == {
        "corrupt_document",
        "empty_document",
        "undecodable",
        "unsupported_format",
    }


def test_ray_and_in_process_produce_identical_ledgers_and_indexes(
    ray_executor: RayExecutor,
    local_run: tuple[Run, Stores],
    embedder: Any,
    components: Any,
    corpus: Path,
    tmp_path: Path,
) -> None:
    local_result, local = local_run
    stores = open_embedded(tmp_path / "ray", embedder.dim)
    try:
        result = run(stores, embedder, components, ray_executor, corpus)
        assert_same_report(result, local_result)
        report = result[0]
        job, _errors = stores.ledger.get_job(report.job_id)
        assert job.executor == "ray"

        assert ledger_rows(stores) == ledger_rows(local)

        ours, theirs = vectors_of(stores), vectors_of(local)
        assert sorted(ours) == sorted(theirs) == sorted(local.ledger.chunk_ids())
        for chunk_id, vector in theirs.items():
            # batches are composed differently, so padding changes the last float bits only
            np.testing.assert_allclose(ours[chunk_id], vector, atol=1e-5)

        assert stores.fulltext.chunk_ids() == local.fulltext.chunk_ids()
        assert lexical_hits(stores) == lexical_hits(local)
        assert all(lexical_hits(stores).values())
        assert upkeep.check(stores).consistent

        again, _ = run(stores, embedder, components, ray_executor, corpus)  # unchanged files are skipped
        assert again.chunks_added == 0 and again.documents_unchanged == local_result[0].documents_added
    finally:
        stores.close()


def test_ray_onto_postgresql_and_qdrant_client_gives_the_same_ledger_and_vectors(
    ray_executor: RayExecutor,
    local_run: tuple[Run, Stores],
    embedder: Any,
    components: Any,
    corpus: Path,
    tmp_path: Path,
    postgres_server_url: str,
) -> None:
    from sqlalchemy import create_engine, text

    local_result, local = local_run
    stores = open_servers(tmp_path / "servers", embedder.dim, postgres_server_url)
    try:
        result = run(stores, embedder, components, ray_executor, corpus)
        assert_same_report(result, local_result)
        assert ledger_rows(stores) == ledger_rows(local)
        ours, theirs = vectors_of(stores), vectors_of(local)
        assert sorted(ours) == sorted(theirs)
        for chunk_id, vector in theirs.items():
            np.testing.assert_allclose(ours[chunk_id], vector, atol=1e-5)
        assert stores.fulltext.chunk_ids() == local.fulltext.chunk_ids()
        # the two lexical backends score differently in detail, but agree on what matches best
        ours_lexical, local_lexical = lexical_hits(stores), lexical_hits(local)
        for query in QUERIES:
            third_best = local_lexical[query][2][1]
            assert ours_lexical[query][0][0] in {c for c, score in local_lexical[query] if score >= third_best}, query
        assert upkeep.check(stores).consistent
    finally:
        stores.close()
        engine = create_engine(postgres_server_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()


def _ray_processes(prefix: str) -> list[Any]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            title = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if title.startswith(prefix):
            found.append(proc)
    return found


def test_killed_ray_workers_are_retried_and_the_job_converges(
    ray_executor: RayExecutor,
    local_run: tuple[Run, Stores],
    embedder: Any,
    components: Any,
    corpus: Path,
    tmp_path: Path,
) -> None:
    """SIGKILL a worker while it parses a file and the embedding actor while it embeds: Ray re-runs
    both, and the job ends with exactly the ledger and indexes of an undisturbed run."""
    local_result, local = local_run
    stores = open_embedded(tmp_path / "killed", embedder.dim)
    killed: dict[str, int] = {}
    done = threading.Event()

    def killer() -> None:
        targets = ["ray::prepare_file", "ray::EmbedActor.embed"]
        while targets and not done.is_set():
            for target in list(targets):
                procs = _ray_processes(target)
                if procs:
                    os.kill(procs[0].pid, signal.SIGKILL)
                    killed[target] = procs[0].pid
                    targets.remove(target)
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        result = run(stores, embedder, components, ray_executor, corpus)
        done.set()
        thread.join()
        assert set(killed) == {"ray::prepare_file", "ray::EmbedActor.embed"}, killed
        assert_same_report(result, local_result)
        assert ledger_rows(stores) == ledger_rows(local)
        assert sorted(vectors_of(stores)) == sorted(stores.ledger.chunk_ids()) == sorted(local.ledger.chunk_ids())
        assert stores.vectors.count() == len(local.ledger.chunk_ids())  # nothing duplicated
        assert stores.fulltext.count() == len(local.ledger.chunk_ids())
        assert upkeep.check(stores).consistent
    finally:
        done.set()
        stores.close()


def test_settings_choose_the_executor(ray_session: Any) -> None:
    from kag.errors import ConfigurationError
    from kag.settings import Settings

    assert isinstance(make_executor(Settings(_env_file=None), SPEC), InProcessExecutor)
    ray_ex = make_executor(Settings(_env_file=None, ingest_executor="ray", ray_embed_actors=2), SPEC)
    assert isinstance(ray_ex, RayExecutor) and ray_ex.embed_actors == 2
    with pytest.raises(ConfigurationError, match="KAG_INGEST_EXECUTOR"):
        make_executor(Settings(_env_file=None), SPEC, "dask")
    no_gpu = RayExecutor(SPEC, embed_gpus=1)
    with pytest.raises(ConfigurationError, match="no GPU"):
        no_gpu._embedders()
