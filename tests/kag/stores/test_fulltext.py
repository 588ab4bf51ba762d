"""One contract for every FullTextIndex backend: Tantivy (a real index folder) and Qdrant BM25 sparse
vectors (qdrant-client local mode, which applies the IDF modifier as the server does), in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kag.errors import DataDirLockedError, StoreError
from kag.records import IndexedChunk, ScoredChunk
from kag.stores.base import FullTextIndex
from kag.stores.fulltext import TantivyIndex
from kag.stores.fulltext_qdrant import QdrantBM25Index

Opener = Callable[[], FullTextIndex]


def chunk(cid: str, text: str, *, doc: str = "d1", collection: str = "A", title: str = "") -> IndexedChunk:
    return IndexedChunk(chunk_id=cid, document_id=doc, collection=collection, text=text, title=title)


def ids(hits: list[ScoredChunk]) -> list[str]:
    return [h.chunk_id for h in hits]


def _open_tantivy(tmp_path: Path) -> FullTextIndex:
    return TantivyIndex(tmp_path / "tantivy")


def _open_qdrant(tmp_path: Path) -> FullTextIndex:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "qdrant-lexical"))
    try:
        return QdrantBM25Index(client, "kag_lexical", owns_client=True)
    except Exception:
        client.close()
        raise


@pytest.fixture(params=["tantivy", "qdrant"])
def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the backend on the same location each call; everything opened is closed afterwards."""
    opened: list[FullTextIndex] = []
    make = _open_tantivy if request.param == "tantivy" else _open_qdrant

    def opener() -> FullTextIndex:
        index = make(tmp_path)
        opened.append(index)
        return index

    yield opener
    for index in opened:
        index.close()


@pytest.fixture
def index(open_index: Opener) -> FullTextIndex:
    return open_index()


def add(index: FullTextIndex, *chunks: IndexedChunk) -> None:
    index.add(list(chunks))
    index.commit()


def test_implements_the_protocol(index: FullTextIndex) -> None:
    assert isinstance(index, FullTextIndex)


def test_stemming_matches_other_forms_of_a_word(index: FullTextIndex) -> None:
    add(index, chunk("c1", "She runs along the river every morning."), chunk("c2", "A recipe for bread."))
    assert ids(index.search("running", 10, ["A"])) == ["c1"]
    assert ids(index.search("RUN", 10, ["A"])) == ["c1"]


def test_hits_carry_score_document_and_collection(index: FullTextIndex) -> None:
    add(index, chunk("c1", "quarterly revenue grew", doc="d7"))
    [hit] = index.search("revenue", 5, ["A"])
    assert (hit.chunk_id, hit.document_id, hit.collection) == ("c1", "d7", "A")
    assert hit.score > 0


def test_bm25_ranks_the_more_relevant_chunk_first(index: FullTextIndex) -> None:
    add(
        index,
        chunk("once", "the contract mentions a penalty once among many other unrelated words here"),
        chunk("often", "penalty penalty: the penalty clause"),
        chunk("none", "nothing relevant"),
    )
    assert ids(index.search("penalty", 10, ["A"])) == ["often", "once"]


def test_title_is_searched_at_half_the_weight_of_the_text_by_default(index: FullTextIndex) -> None:
    add(
        index,
        chunk("in-title", "general remarks about the year", title="Vacation policy"),
        chunk("in-text", "general remarks about vacation this year", title="Notes"),
        chunk("neither", "general remarks", title="Other"),
    )
    # every chunk of a document repeats its title, so a title match says less than a text match
    # (tuned on SciFact train: title boost 1.5 -> 0.7157 nDCG@10, 0.5 -> 0.7270)
    assert ids(index.search("vacation", 10, ["A"])) == ["in-text", "in-title"]
    assert ids(index.search("policy", 10, ["A"])) == ["in-title"]


def test_title_boost_weighs_the_title_at_query_time_and_zero_leaves_it_out(index: FullTextIndex) -> None:
    add(
        index,
        chunk("in-title", "general remarks about the year", title="Vacation policy"),
        chunk("in-text", "general remarks about vacation this year", title="Notes"),
    )
    index.title_boost = 0.0  # type: ignore[attr-defined]
    assert ids(index.search("vacation", 10, ["A"])) == ["in-text"]
    assert index.search("policy", 10, ["A"]) == []
    index.title_boost = 4.0  # type: ignore[attr-defined]
    boosted = index.search("vacation", 10, ["A"])
    assert ids(boosted) == ["in-title", "in-text"] and boosted[0].score > 2 * boosted[1].score


def test_quoted_phrase_ranks_the_exact_phrase_first(index: FullTextIndex) -> None:
    add(
        index,
        chunk("scattered", "the brown dog saw a quick fox"),
        chunk("phrase", "the quick brown fox jumps"),
    )
    assert ids(index.search('"quick brown"', 10, ["A"]))[0] == "phrase"


def test_collection_filter_is_applied_inside_the_engine(index: FullTextIndex) -> None:
    # many better matches in B must not push A's only match out of a top-1
    add(index, *[chunk(f"b{i}", "budget budget budget", collection="B") for i in range(20)])
    add(index, chunk("a1", "the budget was discussed at length among other topics", collection="A"))
    assert ids(index.search("budget", 1, ["A"])) == ["a1"]
    assert len(index.search("budget", 100, ["A", "B"])) == 21
    assert index.search("budget", 10, ["C"]) == []


def test_document_filter_narrows_the_collection_filter(index: FullTextIndex) -> None:
    add(
        index,
        chunk("a1", "salary bands", doc="d1"),
        chunk("a2", "salary review", doc="d2"),
        chunk("b2", "salary review", doc="d2", collection="B"),
    )
    assert ids(index.search("salary", 10, ["A"], document_ids=["d2"])) == ["a2"]
    assert index.search("salary", 10, ["A"], document_ids=[]) == []


def test_no_collection_means_no_result(index: FullTextIndex) -> None:
    add(index, chunk("a1", "anything at all"))
    assert index.search("anything", 10, []) == []
    assert index.search("anything", 0, ["A"]) == []


def test_adds_are_visible_after_commit(index: FullTextIndex) -> None:
    index.add([chunk("a1", "pending words")])
    assert index.search("pending", 10, ["A"]) == []
    index.commit()
    assert ids(index.search("pending", 10, ["A"])) == ["a1"]


def test_adding_a_chunk_again_replaces_it(index: FullTextIndex) -> None:
    add(index, chunk("a1", "old wording"))
    add(index, chunk("a1", "new wording"))
    index.add([chunk("a2", "first"), chunk("a2", "second")])  # twice in one batch
    index.commit()
    assert index.count() == 2
    assert index.search("old", 10, ["A"]) == []
    assert ids(index.search("wording", 10, ["A"])) == ["a1"]
    assert ids(index.search("second", 10, ["A"])) == ["a2"]
    assert index.search("first", 10, ["A"]) == []


def test_delete_documents(index: FullTextIndex) -> None:
    add(index, chunk("a1", "alpha", doc="d1"), chunk("a2", "alpha", doc="d1"), chunk("a3", "alpha", doc="d2"))
    index.delete_documents(["d1"])
    assert ids(index.search("alpha", 10, ["A"])) == ["a3"]
    assert index.chunk_ids() == {"a3"}


def test_delete_chunks_and_collection(index: FullTextIndex) -> None:
    add(
        index,
        chunk("a1", "beta"),
        chunk("a2", "beta"),
        chunk("b1", "beta", collection="B"),
        chunk("c1", "beta", collection="C"),
    )
    index.delete_chunks(["a1", "never-stored"])
    assert index.chunk_ids("A") == {"a2"}
    index.delete_collection("B")
    assert set(ids(index.search("beta", 10, ["A", "B", "C"]))) == {"a2", "c1"}
    assert index.count() == 2


def test_chunk_ids_count_and_clear(index: FullTextIndex) -> None:
    assert index.count() == 0
    assert index.chunk_ids() == set()
    add(index, chunk("a1", "x"), chunk("b1", "y", collection="B"))
    assert index.count() == 2
    assert index.chunk_ids() == {"a1", "b1"}
    assert index.chunk_ids("B") == {"b1"}
    index.clear()
    assert index.count() == 0
    add(index, chunk("a2", "gamma"))
    assert ids(index.search("gamma", 10, ["A"])) == ["a2"]


def test_data_survives_close_and_reopen(open_index: Opener) -> None:
    first = open_index()
    add(first, chunk("a1", "durable words"))
    first.add([chunk("a2", "staged then closed")])  # close commits staged adds
    first.close()
    again = open_index()
    assert again.count() == 2
    assert ids(again.search("durable", 10, ["A"])) == ["a1"]
    assert ids(again.search("staged", 10, ["A"])) == ["a2"]


def test_deletes_also_remove_staged_adds(index: FullTextIndex) -> None:
    index.add([chunk("a1", "staged words", doc="d1"), chunk("a2", "staged words", doc="d2")])
    index.delete_documents(["d1"])  # deletes commit at once, and hit what was staged before them
    assert ids(index.search("staged", 10, ["A"])) == ["a2"]


def test_scores_are_bm25_and_rarer_terms_weigh_more(index: FullTextIndex) -> None:
    add(
        index,
        chunk("both", "kestrel robot"),
        *[chunk(f"r{i}", f"robot number {i}") for i in range(6)],
    )
    [rare] = index.search("kestrel", 1, ["A"])
    common = {h.chunk_id: h.score for h in index.search("robot", 10, ["A"])}
    assert rare.chunk_id == "both" and len(common) == 7
    assert rare.score > common["both"] > 0  # df 1 of 7 against df 7 of 7
    assert index.search("kestrel robot", 1, ["A"])[0].chunk_id == "both"


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced',
        "a:b",
        "((",
        "AND OR NOT",
        "",
        "   ",
        "title:secret",
        "field:[a TO z] OR -x +y ~2 ^3 * ? \\ / { } !",
        "'; DROP TABLE chunks; --",
        "\u00e9t\u00e9 \u6771\u4eac \U0001f600",
        "a" * 500,
        " ".join(f"w{i}" for i in range(1000)),
    ],
)
def test_any_user_string_is_a_safe_query(index: FullTextIndex, query: str) -> None:
    add(index, chunk("a1", "a b and or not secret title field"))
    hits = index.search(query, 5, ["A"])
    assert all(h.chunk_id == "a1" for h in hits)


def test_operators_in_user_text_are_plain_words(index: FullTextIndex) -> None:
    add(index, chunk("a1", "this and that"), chunk("a2", "other things"))
    assert ids(index.search("AND", 10, ["A"])) == ["a1"]
    assert ids(index.search("-this", 10, ["A"])) == ["a1"]  # not a negation


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    with TantivyIndex(tmp_path / "t") as index:
        add(index, chunk("a1", "kept"))
        with pytest.raises(DataDirLockedError, match="in use by another writer"):
            TantivyIndex(tmp_path / "t")
        with pytest.raises(DataDirLockedError):
            TantivyIndex(tmp_path / "t", reset=True)  # never deletes an index in use
        assert ids(index.search("kept", 10, ["A"])) == ["a1"]
    # once closed, the folder opens again
    TantivyIndex(tmp_path / "t").close()


def test_an_index_with_another_schema_asks_for_reindex(tmp_path: Path) -> None:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("something_else", stored=True)
    (tmp_path / "t").mkdir()
    tantivy.Index(builder.build(), path=str(tmp_path / "t"))
    with pytest.raises(StoreError, match="kag reindex"):
        TantivyIndex(tmp_path / "t")
    with TantivyIndex(tmp_path / "t", reset=True) as index:
        assert index.count() == 0


def test_closed_index_refuses_writes(index: FullTextIndex) -> None:
    index.close()
    index.close()  # idempotent
    with pytest.raises(StoreError):
        index.add([chunk("a1", "late")])


# -- Qdrant-specific: the IDF comes from Qdrant, the term-frequency part from kag ---------------


def test_qdrant_applies_the_idf_modifier(tmp_path: Path) -> None:
    """The stored vector holds only the BM25 tf part, so a score equal to idf * tf-part proves
    that Qdrant multiplied in the IDF (here: qdrant-client local mode, as the server does)."""
    import math

    with _open_qdrant(tmp_path) as index:
        assert isinstance(index, QdrantBM25Index)
        add(index, chunk("c1", "alpha beta"), chunk("c2", "beta gamma"), chunk("c3", "delta"))
        [hit] = index.search("alpha", 5, ["A"])
        n, df = 3, 1
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        tf_part = 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / index.avg_text_tokens))
        assert hit.score == pytest.approx(idf * tf_part, rel=1e-4)
        assert sorted(index.search("beta", 5, ["A"]), key=lambda h: h.chunk_id)[0].score < hit.score


def test_qdrant_collection_without_the_bm25_vector_asks_for_reindex(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        client.create_collection("kag_lexical", vectors_config={"x": models.VectorParams(size=2, distance="Cosine")})
        with pytest.raises(StoreError, match="kag reindex"):
            QdrantBM25Index(client, "kag_lexical")
        with QdrantBM25Index(client, "kag_lexical", reset=True) as index:
            assert index.count() == 0
    finally:
        client.close()


def test_qdrant_term_dimensions_are_stable() -> None:
    from kag.stores.fulltext_qdrant import term_dimension

    # the same term maps to the same dimension in every process and release: stored vectors depend on it
    assert term_dimension("b:robot") == term_dimension("b:robot") == 1571569252
    assert term_dimension("t:robot") != term_dimension("b:robot")


def test_the_qdrant_backend_needs_a_server_url(tmp_path: Path) -> None:
    from kag.errors import ConfigurationError
    from kag.stores.bundle import open_fulltext_index

    with pytest.raises(ConfigurationError, match="KAG_QDRANT_URL"):
        open_fulltext_index(backend="qdrant", data_dir=tmp_path, qdrant_url=None, qdrant_api_key=None)
    with pytest.raises(ConfigurationError, match="tantivy"):
        open_fulltext_index(backend="lucene", data_dir=tmp_path, qdrant_url=None, qdrant_api_key=None)
