"""kill -9 at many points of a real `kag ingest` (both stages) and `kag graph build`, then re-run: the
same state as an uninterrupted run, and `kag doctor` consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ingest.corpus_factory import make_corpus

DRIVER = Path(__file__).with_name("crash_driver.py")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# (method, nth call, before/after): points across the write path of several batches
KILL_POINTS = [
    ("kag.ledger.store:Ledger.write_document", 3, "after"),
    ("kag.stores.vector:EdgeVectorIndex.upsert", 2, "after"),
    ("kag.stores.fulltext:TantivyIndex.add", 2, "after"),
    ("kag.stores.fulltext:TantivyIndex.commit", 2, "before"),
    ("kag.ledger.store:Ledger.mark_indexed", 2, "before"),
    ("kag.ledger.store:Ledger.delete_document", 1, "before"),
]
# stage 2 (the graph), in the same `kag ingest` run: while extracting, while writing a document's
# graph, and while embedding entity names
GRAPH_KILL_POINTS = [
    ("ingest.graph:SpacyGraphExtractor.extract", 3, "before"),
    ("kag.ledger.store:Ledger.write_graph", 2, "after"),
    ("kag.ledger.store:Ledger.write_graph", 4, "before"),
    ("kag.ledger.store:Ledger.set_entity_vectors", 1, "before"),
]


def _env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAG_DATA_DIR=str(data_dir),
        KAG_INDEX_BATCH_SIZE="6",
        KAG_CHUNK_SIZE="48",
        KAG_CHUNK_OVERLAP="8",
        PYTHONPATH=str(ROOT),
    )
    env.pop("KAG_DATABASE_URL", None)
    return env


def _kag(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kag.cli", *args], env=_env(data_dir), capture_output=True, text=True, timeout=300
    )


def _state(data_dir: Path) -> dict[str, object]:
    """Ledger documents and chunk ids in every store, read in this process once the run has exited."""
    from ingest import upkeep
    from kag.stores.bundle import open_stores

    stores = open_stores(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'ledger.sqlite3'}", dim=384)
    try:
        health = upkeep.check(stores)
        return {
            "consistent": health.consistent,
            "health": [c.to_dict() for c in health.collections],
            "documents": sorted(
                (d.id, d.sha256, d.version, d.status, d.graph_status) for d in stores.ledger.documents()
            ),
            "ledger": sorted(stores.ledger.chunk_ids()),
            "vectors": sorted(stores.vectors.chunk_ids()),
            "fulltext": sorted(stores.fulltext.chunk_ids()),
            "graph": stores.ledger.graph_counts(),
            "unembedded_entities": sum(
                len(stores.ledger.entities_without_vectors(c)) for c in stores.ledger.collections()
            ),
        }
    finally:
        stores.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_corpus(tmp_path_factory.mktemp("crash") / "corpus")
    for i in range(6):  # more documents, so the job spans several batches
        (root / f"note-{i}.md").write_text(f"# Note {i}\n\nThe Kestrel fleet manager schedules robot {i}. " * 8)
    return root


@pytest.fixture(scope="module")
def clean_state(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    data = tmp_path_factory.mktemp("clean")
    result = _kag(data, "ingest", str(corpus), "-c", "hr", "--json")
    assert result.returncode == 0, result.stderr
    state = _state(data)
    assert state["consistent"] is True and state["ledger"] and state["graph"][1] > 0  # type: ignore[index]
    return state


@pytest.mark.parametrize(
    ("target", "nth", "when"), KILL_POINTS, ids=[f"{t.split('.')[-1]}#{n}-{w}" for t, n, w in KILL_POINTS]
)
def test_kill_9_then_rerun_converges(
    target: str, nth: int, when: str, corpus: Path, clean_state: dict[str, object], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    args = ["ingest", str(corpus), "-c", "hr", "--json"]
    if "delete_document" in target:
        # a deletion killed half-way: ingest, remove a file, then --sync gets killed
        assert _kag(data, *args).returncode == 0
        victim = corpus / "note-5.md"
        saved = victim.read_text()
        victim.unlink()
        try:
            crashed = subprocess.run(
                [sys.executable, str(DRIVER), target, str(nth), when, "--", *args, "--sync"],
                env=_env(data),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert crashed.returncode == -9, crashed.stderr
            rerun = _kag(data, *args, "--sync")
            assert rerun.returncode == 0, rerun.stderr
        finally:
            victim.write_text(saved)
    else:
        crashed = subprocess.run(
            [sys.executable, str(DRIVER), target, str(nth), when, "--", *args],
            env=_env(data),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert crashed.returncode == -9, f"the kill point was never reached: {crashed.stderr[-2000:]}"
    rerun = _kag(data, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert _state(data) == clean_state


def _doctor(data_dir: Path) -> tuple[int, dict[str, object]]:
    result = _kag(data_dir, "doctor", "--json")
    return result.returncode, json.loads(result.stdout)


def _crash(data_dir: Path, target: str, nth: int, when: str, *args: str) -> None:
    crashed = subprocess.run(
        [sys.executable, str(DRIVER), target, str(nth), when, "--", *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == -9, f"the kill point was never reached: {crashed.stderr[-2000:]}"


@pytest.mark.parametrize(
    ("target", "nth", "when"),
    GRAPH_KILL_POINTS,
    ids=[f"{t.split('.')[-1]}#{n}-{w}" for t, n, w in GRAPH_KILL_POINTS],
)
def test_kill_9_in_stage_2_then_rerun_converges_and_doctor_is_consistent(
    target: str, nth: int, when: str, corpus: Path, clean_state: dict[str, object], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    args = ["ingest", str(corpus), "-c", "hr", "--json"]
    _crash(data, target, nth, when, *args)
    # every document is searchable already: stage 1 finished before the kill
    crashed = _state(data)
    assert crashed["ledger"] == crashed["vectors"] == crashed["fulltext"] == clean_state["ledger"]
    # the killed job is still `running`; doctor names it stale and exits 1
    code, report = _doctor(data)
    assert code == 1 and report["consistent"] is False
    assert [j["collection"] for j in report["stale_jobs"]] == ["hr"]  # type: ignore[index]
    rerun = _kag(data, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert _state(data) == clean_state
    code, report = _doctor(data)
    assert code == 0 and report["consistent"] is True and report["stale_jobs"] == [] and report["graph_pending"] == 0


def test_kill_9_in_graph_build_then_rerun_converges(
    corpus: Path, clean_state: dict[str, object], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    later = _kag(data, "ingest", str(corpus), "-c", "hr", "--json", "--graph", "later")
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout)["graph"] is None
    code, report = _doctor(data)
    assert code == 0 and report["graph_pending"] == len(clean_state["documents"])  # type: ignore[arg-type]
    _crash(data, "kag.ledger.store:Ledger.write_graph", 3, "after", "graph", "build", "-c", "hr")
    rerun = _kag(data, "graph", "build", "-c", "hr", "--json")
    assert rerun.returncode == 0, rerun.stderr
    built = json.loads(rerun.stdout)
    assert built[0]["documents_done"] == len(clean_state["documents"]) - 3  # type: ignore[arg-type]
    assert _state(data) == clean_state
    code, report = _doctor(data)
    assert code == 0 and report["consistent"] is True and report["graph_pending"] == 0
