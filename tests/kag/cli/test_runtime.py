"""The index fingerprint: what changes the stored index changes it, nothing else does."""

from __future__ import annotations

from pathlib import Path

from kag.cli.runtime import Runtime
from kag.settings import Settings


def fingerprint(tmp_path: Path, **overrides: object) -> str:
    rt = Runtime(Settings(data_dir=tmp_path, **overrides))
    try:
        return rt.fingerprint
    finally:
        rt.close()


def test_fingerprint_names_index_settings_and_only_them(tmp_path: Path) -> None:
    base = fingerprint(tmp_path)
    assert "graph=1;" in base and "chunk=" in base and "embedder=" in base
    # query-time settings leave the index as it is
    assert fingerprint(tmp_path, weight_graph=0.5, rrf_k=30, verify_policy="drop") == base
    # the default spaCy extractor is not named (indexes built before the setting keep their fingerprint)
    assert fingerprint(tmp_path, graph_extractor="spacy") == base
    assert "graph=1/llm;" in fingerprint(tmp_path, graph_extractor="llm")
    assert fingerprint(tmp_path, chunk_size=300) != base
    assert fingerprint(tmp_path, embed_title=True) == base + ";embed_title=1"
