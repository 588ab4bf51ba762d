"""The one settings object: env prefix, defaults, validation, and every field documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kag.settings import Settings, settings_table
from pipelines.retrieve import FUSION_METHODS


def test_every_setting_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 10, name


def test_readme_configuration_table_matches_the_settings() -> None:
    from kag.cli import settings_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert settings_markdown() in readme, "README is stale: run `make docs`"


def test_readme_cli_reference_matches_the_commands() -> None:
    from kag.cli import cli_reference, command_paths

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert ["audit", "replay"] in command_paths() and ["ask"] in command_paths()
    assert cli_reference() in readme, "README is stale: run `make docs`"


def test_env_prefix_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KAG_CHUNK_SIZE", "128")
    s = Settings(_env_file=None)
    assert s.data_dir == tmp_path and s.chunk_size == 128
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'ledger.sqlite3').resolve()}"
    assert s.qdrant_url is None
    assert {row[0] for row in settings_table()} == {f"KAG_{n.upper()}" for n in Settings.model_fields}


def test_overlap_must_be_smaller_than_chunk_size() -> None:
    with pytest.raises(ValidationError, match="chunk_overlap"):
        Settings(_env_file=None, chunk_size=32, chunk_overlap=32)


def test_database_url_setting_wins() -> None:
    s = Settings(_env_file=None, database_url="postgresql+psycopg://u@h/db")
    assert s.resolved_database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    "name",
    ["KAG_LEXICAL_TITLE_BOOST", "KAG_FUSION_DOCUMENT_WEIGHT", "KAG_DENSE_FEEDBACK_CHUNKS", "KAG_DENSE_FEEDBACK_WEIGHT"],
)
def test_negative_fusion_and_boost_weights_are_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "-1" if name.endswith("CHUNKS") else "-0.5")
    with pytest.raises(ValidationError, match=name.removeprefix("KAG_").lower()):
        Settings(_env_file=None)


def test_lexical_title_boost_reaches_the_full_text_index(tmp_path: Path) -> None:
    from kag.cli.runtime import Runtime

    rt = Runtime(Settings(_env_file=None, data_dir=tmp_path, lexical_title_boost=0.0))
    try:
        assert rt.stores.fulltext.title_boost == 0.0  # type: ignore[attr-defined]
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("name", "value"), [("KAG_EMBEDDING_RUNTIME", "tensorrt"), ("KAG_EMBEDDING_ONNX_THREADS", "0")]
)
def test_bad_embedding_runtime_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("KAG_").lower()):
        Settings(_env_file=None)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_the_embedding_runtime_reaches_the_embedder(tmp_path: Path, runtime: str) -> None:
    from kag.cli.runtime import Runtime

    cache = tmp_path / "onnx-cache"
    rt = Runtime(
        Settings(_env_file=None, data_dir=tmp_path / "data", embedding_runtime=runtime, embedding_onnx_cache_dir=cache)
    )
    try:
        assert rt.embedder.runtime_used == runtime
        assert len(list(cache.glob("*.onnx"))) == (runtime == "onnx")
    finally:
        rt.close()


@pytest.mark.parametrize("value", [True, False])
def test_the_question_terms_check_reaches_the_verifier(monkeypatch: pytest.MonkeyPatch, value: bool) -> None:
    from kag.cli.runtime import Runtime

    monkeypatch.setenv("KAG_VERIFY_QUESTION_TERMS", str(value).lower())
    rt = Runtime(Settings(_env_file=None))
    rt.__dict__["embedder"] = object()  # the verifier only keeps it; no model is loaded for this check
    assert rt.verifier("flag").require_question_terms is value


def test_dense_feedback_settings_reach_the_hybrid_retriever(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedder: object
) -> None:
    from kag.cli.runtime import Runtime
    from pipelines.retrieve import HybridRetriever

    monkeypatch.setenv("KAG_DENSE_FEEDBACK_CHUNKS", "4")
    monkeypatch.setenv("KAG_DENSE_FEEDBACK_WEIGHT", "0.75")
    rt = Runtime(Settings(_env_file=None, data_dir=tmp_path))
    rt.__dict__["embedder"] = embedder  # the session's model, not a second load
    rt.__dict__["query_extractor"] = object()  # the graph retriever only keeps it
    try:
        hybrid = rt.retriever("hybrid")
        assert isinstance(hybrid, HybridRetriever)
        assert (hybrid.feedback_chunks, hybrid.feedback_weight) == (4, 0.75)
    finally:
        rt.close()


@pytest.mark.parametrize("method", FUSION_METHODS)
def test_each_fusion_method_reaches_the_hybrid_retriever(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedder: object, method: str
) -> None:
    from kag.cli.runtime import Runtime
    from pipelines.retrieve import HybridRetriever

    monkeypatch.setenv("KAG_FUSION", method)
    rt = Runtime(Settings(_env_file=None, data_dir=tmp_path))
    rt.__dict__["embedder"] = embedder
    rt.__dict__["query_extractor"] = object()
    try:
        hybrid = rt.retriever("hybrid")
        assert isinstance(hybrid, HybridRetriever) and hybrid.fusion == method
    finally:
        rt.close()


def test_an_unknown_fusion_method_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAG_FUSION", "borda")
    with pytest.raises(ValidationError, match="fusion must be `rrf`, `score` or `zscore`"):
        Settings(_env_file=None)


def test_the_shipped_fusion_is_the_one_tuned_on_scifact_train() -> None:
    # docs/evaluation.md, step 4: z-score fusion, dense 1.5, lexical 1, graph 0.25, depth 200 (graph 50)
    s = Settings(_env_file=None)
    assert (s.fusion, s.weight_dense, s.weight_lexical, s.weight_graph) == ("zscore", 1.5, 1.0, 0.25)
    assert (s.retrieval_depth, s.depth_graph, s.dense_feedback_chunks) == (200, 50, 0)
