"""One contract for every VectorIndex backend: Qdrant Edge and qdrant-client, real engines in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from kag.errors import DataDirLockedError, StoreError
from kag.records import IndexedChunk, ScoredChunk
from kag.stores.base import VectorIndex
from kag.stores.vector import EdgeVectorIndex, QdrantClientVectorIndex, open_vector_index

DIM = 8
Opener = Callable[..., VectorIndex]


def unit(*weights: float) -> np.ndarray:
    """A normalized DIM-d vector whose leading components are `weights`."""
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(weights)] = weights
    return v / np.linalg.norm(v)


def chunk(cid: str, doc: str = "d1", collection: str = "A") -> IndexedChunk:
    return IndexedChunk(chunk_id=cid, document_id=doc, collection=collection, text=f"text of {cid}")


def put(index: VectorIndex, items: list[tuple[IndexedChunk, np.ndarray]]) -> None:
    index.upsert([c for c, _ in items], np.stack([v for _, v in items]))


def ids(hits: list[ScoredChunk]) -> list[str]:
    return [h.chunk_id for h in hits]


def _open_edge(tmp_path: Path, dim: int) -> VectorIndex:
    return EdgeVectorIndex(tmp_path / "qdrant", dim)


def _open_client(tmp_path: Path, dim: int) -> VectorIndex:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "qdrant-local"))
    try:
        return QdrantClientVectorIndex(client, "kag_chunks", dim, owns_client=True)
    except Exception:
        client.close()
        raise


@pytest.fixture(params=["edge", "qdrant-client"])
def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the backend on the same folder each call; everything opened is closed afterwards."""
    opened: list[VectorIndex] = []
    make = _open_edge if request.param == "edge" else _open_client

    def opener(dim: int = DIM) -> VectorIndex:
        index = make(tmp_path, dim)
        opened.append(index)
        return index

    yield opener
    for index in opened:
        index.close()


@pytest.fixture
def index(open_index: Opener) -> VectorIndex:
    return open_index()


def test_implements_the_protocol(index: VectorIndex) -> None:
    assert isinstance(index, VectorIndex)


def test_search_ranks_by_cosine_and_reports_where_hits_live(index: VectorIndex) -> None:
    put(
        index,
        [
            (chunk("far", doc="d2"), unit(0, 1)),
            (chunk("near"), unit(1)),
            (chunk("mid"), unit(1, 1)),
        ],
    )
    hits = index.search(unit(1), 10, ["A"])
    assert ids(hits) == ["near", "mid", "far"]
    assert (hits[0].chunk_id, hits[0].document_id, hits[0].collection) == ("near", "d1", "A")
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score == pytest.approx(np.sqrt(0.5), abs=1e-5)
    assert hits[2].document_id == "d2"
    assert ids(index.search(unit(1), 2, ["A"])) == ["near", "mid"]


def test_vectors_returns_what_was_stored_by_chunk_id(index: VectorIndex) -> None:
    put(index, [(chunk("a"), unit(1)), (chunk("b", collection="B"), unit(1, 2))])
    put(index, [(chunk("a"), unit(0, 1))])  # overwritten: the new vector is the one read back
    found = index.vectors(["b", "a", "missing", "a"])
    assert set(found) == {"a", "b"}  # an id that is not stored is left out, a repeated one read once
    np.testing.assert_allclose(found["a"], unit(0, 1), atol=1e-6)
    np.testing.assert_allclose(found["b"], unit(1, 2), atol=1e-6)
    assert index.vectors([]) == {}


def test_upserting_a_chunk_again_overwrites_its_single_point(index: VectorIndex) -> None:
    put(index, [(chunk("c1"), unit(1))])
    put(index, [(chunk("c1"), unit(0, 1))])
    assert index.count() == 1
    [hit] = index.search(unit(0, 1), 10, ["A"])
    assert hit.chunk_id == "c1"
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_collection_filter_excludes_a_closer_point_of_another_collection(index: VectorIndex) -> None:
    put(
        index,
        [
            (chunk("best-in-b", collection="B"), unit(1)),
            (chunk("ok-in-a", collection="A"), unit(1, 0.5)),
            (chunk("worse-in-a", collection="A"), unit(0.2, 1)),
        ],
    )
    assert ids(index.search(unit(1), 1, ["A"])) == ["ok-in-a"]
    assert ids(index.search(unit(1), 10, ["A"])) == ["ok-in-a", "worse-in-a"]
    assert ids(index.search(unit(1), 1, ["A", "B"])) == ["best-in-b"]
    assert ids(index.search(unit(1), 10, ["C"])) == []


def test_document_filter_keeps_only_those_documents(index: VectorIndex) -> None:
    put(
        index,
        [
            (chunk("a1", doc="d1"), unit(1)),
            (chunk("a2", doc="d2"), unit(1, 0.1)),
            (chunk("a3", doc="d3"), unit(1, 0.2)),
            (chunk("b1", doc="d2", collection="B"), unit(1)),
        ],
    )
    assert ids(index.search(unit(1), 10, ["A"], document_ids=["d2", "d3"])) == ["a2", "a3"]
    # the document filter narrows the collection filter, never widens it
    assert ids(index.search(unit(1), 10, ["A"], document_ids=["d2"])) == ["a2"]


def test_no_collection_or_no_document_means_no_result(index: VectorIndex) -> None:
    put(index, [(chunk("c1"), unit(1))])
    assert index.search(unit(1), 10, []) == []
    assert index.search(unit(1), 10, set()) == []
    assert index.search(unit(1), 10, ["A"], document_ids=[]) == []
    assert index.search(unit(1), 0, ["A"]) == []


def test_delete_documents_removes_every_chunk_of_them(index: VectorIndex) -> None:
    put(
        index,
        [(chunk("a1", doc="d1"), unit(1)), (chunk("a2", doc="d1"), unit(0, 1)), (chunk("k", doc="d2"), unit(1, 1))],
    )
    index.delete_documents(["d1"])
    assert ids(index.search(unit(1), 10, ["A"])) == ["k"]
    assert index.chunk_ids() == {"k"}
    assert index.count() == 1


def test_delete_chunks_removes_exactly_those(index: VectorIndex) -> None:
    put(index, [(chunk("a1"), unit(1)), (chunk("a2"), unit(0, 1)), (chunk("a3"), unit(1, 1))])
    index.delete_chunks(["a1", "a3", "never-stored"])
    assert index.chunk_ids() == {"a2"}
    assert ids(index.search(unit(1), 10, ["A"])) == ["a2"]


def test_delete_collection_leaves_other_collections(index: VectorIndex) -> None:
    put(index, [(chunk("a1"), unit(1)), (chunk("b1", collection="B"), unit(1))])
    index.delete_collection("A")
    assert index.search(unit(1), 10, ["A"]) == []
    assert ids(index.search(unit(1), 10, ["A", "B"])) == ["b1"]
    assert index.chunk_ids("A") == set()
    assert index.count() == 1


def test_empty_deletes_are_no_ops(index: VectorIndex) -> None:
    put(index, [(chunk("a1"), unit(1))])
    index.delete_chunks([])
    index.delete_documents([])
    assert index.count() == 1


def test_chunk_ids_and_count(index: VectorIndex) -> None:
    assert index.count() == 0
    assert index.chunk_ids() == set()
    put(index, [(chunk("a1"), unit(1)), (chunk("a2"), unit(0, 1)), (chunk("b1", collection="B"), unit(1, 1))])
    assert index.count() == 3
    assert index.chunk_ids() == {"a1", "a2", "b1"}
    assert index.chunk_ids("A") == {"a1", "a2"}
    assert index.chunk_ids("B") == {"b1"}


def test_chunk_ids_pages_through_more_than_one_scroll_page(index: VectorIndex) -> None:
    rng = np.random.default_rng(7)
    chunks = [chunk(f"c{i}", doc=f"d{i % 13}") for i in range(1100)]
    vectors = rng.standard_normal((len(chunks), DIM)).astype(np.float32)
    index.upsert(chunks, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    assert index.count() == 1100
    assert index.chunk_ids() == {c.chunk_id for c in chunks}


def test_clear_removes_everything_and_stays_usable(index: VectorIndex) -> None:
    put(index, [(chunk("a1"), unit(1)), (chunk("b1", collection="B"), unit(1))])
    index.clear()
    assert index.count() == 0
    assert index.search(unit(1), 10, ["A", "B"]) == []
    put(index, [(chunk("a2"), unit(1))])
    assert ids(index.search(unit(1), 10, ["A"])) == ["a2"]


def test_data_survives_close_and_reopen(open_index: Opener) -> None:
    first = open_index()
    put(first, [(chunk("a1"), unit(1)), (chunk("b1", collection="B"), unit(0, 1))])
    first.flush()
    first.close()
    again = open_index()
    assert again.count() == 2
    assert ids(again.search(unit(1), 10, ["A"])) == ["a1"]
    assert again.chunk_ids("B") == {"b1"}


def test_reopening_with_another_dimension_asks_for_reindex(open_index: Opener) -> None:
    first = open_index()
    put(first, [(chunk("a1"), unit(1))])
    first.close()
    with pytest.raises(StoreError) as info:
        open_index(DIM + 1)
    assert "kag reindex" in str(info.value)


def test_wrong_vector_shapes_are_rejected(index: VectorIndex) -> None:
    with pytest.raises(StoreError):
        index.upsert([chunk("a1"), chunk("a2")], np.stack([unit(1)]))
    with pytest.raises(StoreError):
        index.upsert([chunk("a1")], np.zeros((1, DIM + 1), dtype=np.float32))
    with pytest.raises(StoreError):
        index.search(np.zeros(DIM + 1, dtype=np.float32), 3, ["A"])
    assert index.count() == 0


def test_closed_index_raises_store_error(index: VectorIndex) -> None:
    index.close()
    index.close()  # idempotent
    with pytest.raises(StoreError):
        index.search(unit(1), 3, ["A"])


# -- Qdrant Edge specifics -------------------------------------------------------------------


def test_edge_search_is_exact_before_and_after_optimize(tmp_path: Path) -> None:
    """Tiny thresholds force HNSW graphs and filtered HNSW search on a small shard."""
    dim, n = 32, 3000
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [IndexedChunk(f"c{i}", f"d{i // 10}", "A" if i % 3 else "B", "") for i in range(n)]
    probes = list(range(0, n, 97))

    def check(index: EdgeVectorIndex) -> None:
        for i in probes:
            hits = index.search(vectors[i], 5, [chunks[i].collection])
            assert hits[0].chunk_id == f"c{i}"
            assert {h.collection for h in hits} == {chunks[i].collection}
            other = "B" if chunks[i].collection == "A" else "A"
            assert f"c{i}" not in ids(index.search(vectors[i], 5, [other]))

    with EdgeVectorIndex(tmp_path / "q", dim, indexing_threshold_kb=64, full_scan_threshold_kb=16) as index:
        index.upsert(chunks, vectors)
        assert index.stats()["indexed_vectors"] == 0
        check(index)
        assert index.optimize() is True
        assert index.stats()["indexed_vectors"] > 0
        check(index)
        # writes after optimize land in a fresh appendable segment and are searched too
        new = IndexedChunk("late", "dz", "A", "")
        index.upsert([new], vectors[probes[0]][None, :])
        assert "late" in ids(index.search(vectors[probes[0]], 2, ["A", "B"]))
        index.delete_documents([chunks[probes[1]].document_id])
        assert f"c{probes[1]}" not in ids(index.search(vectors[probes[1]], 5, ["A", "B"]))
        assert index.count() == n + 1 - 10


def test_edge_refuses_a_second_opener_of_the_same_folder(tmp_path: Path) -> None:
    with EdgeVectorIndex(tmp_path / "q", DIM):
        with pytest.raises(DataDirLockedError, match="in use by another process"):
            EdgeVectorIndex(tmp_path / "q", DIM)
    # once closed, the folder opens again
    EdgeVectorIndex(tmp_path / "q", DIM).close()


def test_edge_reset_recreates_the_shard_with_the_new_dimension(tmp_path: Path) -> None:
    with EdgeVectorIndex(tmp_path / "q", DIM) as index:
        put(index, [(chunk("a1"), unit(1))])
        with pytest.raises(DataDirLockedError):
            EdgeVectorIndex(tmp_path / "q", DIM + 1, reset=True)  # never deletes a shard in use
        assert index.count() == 1
    with EdgeVectorIndex(tmp_path / "q", DIM + 1, reset=True) as index:
        assert index.count() == 0
        assert index.dim == DIM + 1


def test_factory_picks_edge_without_a_server_url(tmp_path: Path) -> None:
    index = open_vector_index(
        data_dir=tmp_path, dim=DIM, qdrant_url=None, qdrant_api_key=None, collection_name="kag_chunks"
    )
    try:
        assert isinstance(index, EdgeVectorIndex)
        assert (tmp_path / "qdrant").is_dir()
    finally:
        index.close()
