"""The embedder's ONNX runtime: the same vectors as torch, exported once, checked on every load."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from kag.models import onnx_runtime
from kag.models.embedder import SentenceTransformerEmbedder, bundled_embedding_model_path

TEXTS = [
    "What causes the seasons on Earth?",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "",
    "x",
    "Paid time off accrues at 1.5 days per month; unused days carry over. " * 30,  # truncated at 256 tokens
]


@pytest.fixture(scope="module")
def onnx_cache(onnx_cache_dir: Path) -> Path:
    """The session's export folder (tests/conftest.py): the export the session embedder made, or made here
    for the rest of the session; only this model's export is ever written there."""
    return onnx_cache_dir


@pytest.fixture(scope="module")
def onnx_embedder(onnx_cache: Path):
    model = SentenceTransformerEmbedder(runtime="onnx", onnx_cache_dir=onnx_cache)
    model.warm_up()
    yield model
    model.close()


@pytest.fixture(scope="module")
def torch_embedder():
    model = SentenceTransformerEmbedder(runtime="torch")
    model.warm_up()
    yield model
    model.close()


def test_short_texts_run_on_onnx_with_torch_vectors(onnx_embedder, torch_embedder) -> None:
    assert onnx_embedder.runtime_used == "onnx"
    assert torch_embedder.runtime_used == "torch"
    got = onnx_embedder.embed(TEXTS)
    expected = torch_embedder.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # one text at a time (no padding) equals the padded batch
    np.testing.assert_allclose(onnx_embedder.embed_one(TEXTS[1]), got[1], atol=1e-5)


def test_only_short_calls_use_onnx(onnx_embedder, torch_embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    encoder = onnx_embedder._onnx
    original = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts: calls.append(len(texts)) or original(texts))
    limit = onnx_embedder.onnx_max_texts
    short = [f"query number {i}" for i in range(limit)]
    onnx_embedder.embed(short)
    assert calls == [limit]
    bulk = [f"chunk number {i} of a long ingestion batch" for i in range(limit + 1)]
    vectors = onnx_embedder.embed(bulk)
    assert calls == [limit], "a bulk call went to ONNX"
    np.testing.assert_allclose(vectors, torch_embedder.embed(bulk), atol=1e-5)


def test_the_export_is_reused(onnx_embedder, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (exported,) = onnx_cache.glob("*.onnx")
    stamp = exported.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although a good export is cached")

    monkeypatch.setattr(onnx_runtime, "export", no_export)
    again = SentenceTransformerEmbedder(runtime="onnx", onnx_cache_dir=onnx_cache)
    again.warm_up()
    assert again.runtime_used == "onnx"
    assert exported.stat().st_mtime_ns == stamp
    assert list(onnx_cache.iterdir()) == [exported], "a partial file was left behind"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cached_export_is_exported_again(
    onnx_embedder, torch_embedder, onnx_cache: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    (exported,) = onnx_cache.glob("*.onnx")
    cache = tmp_path / "cache"
    cache.mkdir()
    copy = cache / exported.name
    data = exported.read_bytes()
    copy.write_bytes(b"not an onnx model" if damage == "garbage" else data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="kag.models.onnx_runtime"):
        model = SentenceTransformerEmbedder(runtime="onnx", onnx_cache_dir=cache)
        model.warm_up()
    assert model.runtime_used == "onnx"
    assert "exporting it again" in caplog.text
    assert copy.stat().st_size == len(data)
    np.testing.assert_allclose(model.embed(TEXTS[:2]), torch_embedder.embed(TEXTS[:2]), atol=1e-4)


def test_a_model_the_export_does_not_reproduce_stays_on_torch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the same transformer with CLS pooling: the export (mean pooling) fails its check against torch
    model_dir = tmp_path / "cls-model"
    shutil.copytree(bundled_embedding_model_path(), model_dir)
    pooling = model_dir / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps(config | {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    with caplog.at_level(logging.WARNING, logger="kag.models.embedder"):
        model = SentenceTransformerEmbedder(str(model_dir), runtime="onnx", onnx_cache_dir=tmp_path / "cache")
        model.warm_up()
    assert model.runtime_used == "torch"
    assert "stays on torch" in caplog.text and "does not reproduce" in caplog.text
    reference = SentenceTransformerEmbedder(str(model_dir), runtime="torch")
    np.testing.assert_allclose(model.embed(TEXTS[:2]), reference.embed(TEXTS[:2]), atol=1e-5)


def test_an_unusable_cache_folder_leaves_the_embedder_on_torch(
    tmp_path: Path, torch_embedder, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="kag.models.embedder"):
        model = SentenceTransformerEmbedder(runtime="onnx", onnx_cache_dir=blocker / "onnx")
        model.warm_up()
    assert model.runtime_used == "torch"
    assert "stays on torch" in caplog.text
    assert blocker.read_text() == "a file where the cache folder should be"
    np.testing.assert_allclose(model.embed(TEXTS[:2]), torch_embedder.embed(TEXTS[:2]), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtime": "tensorrt"}, "runtime must be one of torch, onnx"),
        ({"runtime": "onnx", "onnx_threads": 0}, "onnx_threads must be >= 1"),
        ({"runtime": "onnx", "onnx_max_texts": -1}, "onnx_max_texts must be >= 0"),
    ],
)
def test_bad_runtime_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SentenceTransformerEmbedder(**kwargs)  # type: ignore[arg-type]


def test_the_fingerprint_follows_the_model_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(bundled_embedding_model_path(), model_dir)
    first = onnx_runtime.model_fingerprint(model_dir)
    assert onnx_runtime.model_fingerprint(model_dir) == first
    (model_dir / "1_Pooling" / "config.json").write_text("{}")
    assert onnx_runtime.model_fingerprint(model_dir) != first


# -- bulk calls (chunks) on ONNX Runtime ---------------------------------------------------------

BULK = [f"Chunk {i}: " + "ALDH1 expression in breast cancer stem cells. " * (1 + i % 7) for i in range(19)] + [TEXTS[4]]


@pytest.fixture(scope="module")
def int8_embedder(onnx_cache: Path):
    model = SentenceTransformerEmbedder(
        runtime="onnx", onnx_cache_dir=onnx_cache, bulk_runtime="onnx-int8", batch_size=8
    )
    model.warm_up()
    yield model
    model.close()


def test_bulk_calls_on_the_float_export_equal_torch_in_the_callers_order(onnx_cache: Path, torch_embedder) -> None:
    # batch 8 over 20 texts of mixed length: sorted by length into batches, handed back in order
    model = SentenceTransformerEmbedder(runtime="onnx", onnx_cache_dir=onnx_cache, bulk_runtime="onnx", batch_size=8)
    model.warm_up()
    assert model.bulk_runtime_used == "onnx" and model.name == torch_embedder.name  # same vectors, same index
    got = model.embed(BULK)
    np.testing.assert_allclose(got, torch_embedder.embed(BULK), atol=1e-4)
    # the long text is truncated where torch truncates it (256 tokens): longer input, same vector
    np.testing.assert_allclose(model.embed(BULK[-1:] * 17)[0], model.embed([TEXTS[4] * 2] * 17)[0], atol=1e-5)
    assert model.max_seq_length == torch_embedder.max_seq_length == 256


def test_bulk_calls_on_int8_are_close_to_torch_and_name_the_index(int8_embedder, torch_embedder, onnx_cache) -> None:
    assert int8_embedder.bulk_runtime_used == "onnx-int8" and int8_embedder.runtime_used == "onnx"
    got = int8_embedder.embed(BULK)
    expected = torch_embedder.embed(BULK)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(got * expected, axis=1)
    assert cosine.min() > onnx_runtime.MIN_AGREEMENT_INT8 and not np.allclose(got, expected, atol=1e-4)
    # int8 vectors differ from torch's: the embedder's name (and so the index fingerprint) says so
    assert int8_embedder.name == torch_embedder.name + "+int8"
    assert len(list(onnx_cache.glob("*.int8.onnx"))) == 1
    # short calls (queries) stay on the float export
    np.testing.assert_allclose(int8_embedder.embed(TEXTS[:2]), torch_embedder.embed(TEXTS[:2]), atol=1e-4)


def test_a_damaged_int8_export_is_made_again(int8_embedder, onnx_cache: Path, tmp_path: Path) -> None:
    (quantized,) = onnx_cache.glob("*.int8.onnx")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / quantized.name).write_bytes(b"not an onnx model")
    model = SentenceTransformerEmbedder(runtime="onnx", onnx_cache_dir=cache, bulk_runtime="onnx-int8", batch_size=8)
    model.warm_up()
    assert model.bulk_runtime_used == "onnx-int8"
    np.testing.assert_allclose(model.embed(BULK), int8_embedder.embed(BULK), atol=1e-5)  # deterministic


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bulk_runtime": "int4"}, "bulk_runtime must be one of torch, onnx, onnx-int8"),
        ({"bulk_runtime": "onnx", "bulk_threads": -1}, "bulk_threads must be >= 0"),
    ],
)
def test_bad_bulk_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SentenceTransformerEmbedder(**kwargs)  # type: ignore[arg-type]
