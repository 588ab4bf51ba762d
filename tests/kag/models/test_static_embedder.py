"""The static name embedder: distilled once from the bundled model, cached, cheap, and consistent."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kag.models.embedder import SentenceTransformerEmbedder
from kag.models.static_embedder import STATIC_DIMS, StaticEmbedder

NAMES = ["breast cancer", "breast cancers", "Breast Cancer", "mammary tumor", "ALDH1", "Kestrel broker", ""]


@pytest.fixture(scope="module")
def static() -> StaticEmbedder:
    # the user's cache: distilling takes minutes on 2 cores, and its result depends only on the model
    model = StaticEmbedder()
    model.warm_up()
    return model


def test_name_vectors_are_unit_length_of_their_own_dimension(static: StaticEmbedder) -> None:
    vectors = static.embed(NAMES[:-1])
    assert vectors.shape == (len(NAMES) - 1, STATIC_DIMS) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert static.dim == STATIC_DIMS != SentenceTransformerEmbedder().dim  # never mistaken for the model's
    assert static.embed([]).shape == (0, STATIC_DIMS)
    assert np.all(np.isfinite(static.embed([""])))  # no token at all: a zero vector, not NaN


def test_similar_names_are_closer_than_unrelated_ones(static: StaticEmbedder) -> None:
    v = dict(zip(NAMES, static.embed(NAMES), strict=True))
    assert float(v["breast cancer"] @ v["breast cancers"]) > 0.8
    assert float(v["breast cancer"] @ v["Breast Cancer"]) > 0.99  # the tokenizer lowercases
    assert float(v["breast cancer"] @ v["mammary tumor"]) > float(v["breast cancer"] @ v["Kestrel broker"])


def test_the_distilled_table_is_cached_and_reloads_to_the_same_vectors(static: StaticEmbedder, tmp_path: Path) -> None:
    path = static.distilled_path()
    assert (path / "config.json").is_file() and path.parent.name == "static"
    copy = tmp_path / "cache"
    shutil.copytree(path, copy / path.name)
    again = StaticEmbedder(cache_dir=copy)
    assert again.distilled_path() == copy / path.name
    again.warm_up()  # from the copy: nothing is distilled (that would take minutes and write elsewhere)
    np.testing.assert_array_equal(again.embed(NAMES), static.embed(NAMES))
    assert sorted(p.name for p in copy.iterdir()) == [path.name]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="pca_dims must be >= 2"):
        StaticEmbedder(pca_dims=1)
