"""`import kag` stays small and fast, and `__all__` is the whole public surface."""

from __future__ import annotations

import subprocess
import sys

import kag


def test_all_names_exist_and_are_sorted() -> None:
    for name in kag.__all__:
        assert hasattr(kag, name), name
    assert list(kag.__all__) == sorted(kag.__all__)


def test_import_kag_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, kag, kag.cli; "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'spacy', 'llama_cpp', 'qdrant_edge', 'tantivy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
