"""`kag ingest --executor ray` and the scale-out settings through the CLI, with clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kag.cli import app
from tests.ingest.corpus_factory import make_bad_files, make_corpus

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"KAG_DATA_DIR": str(tmp_path / "data"), "KAG_CHUNK_SIZE": "64", "KAG_CHUNK_OVERLAP": "8"}


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_ingest_with_the_ray_executor_matches_the_local_one(env: dict[str, str], tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    bad = make_bad_files(corpus)
    code, out, err = run(
        env | {"KAG_RAY_NUM_CPUS": "2"}, "ingest", str(corpus), "-c", "hr", "--executor", "ray", "--json"
    )
    assert code == 0, err
    via_ray = json.loads(out)
    local_env = env | {"KAG_DATA_DIR": str(tmp_path / "local")}
    code, out, _ = run(local_env, "ingest", str(corpus), "-c", "hr", "--json")
    local = json.loads(out)
    keep = ("status", "files_total", "documents_added", "documents_failed", "chunks_added", "errors")
    assert {k: via_ray[k] for k in keep} == {k: local[k] for k in keep}
    assert {Path(e["path"]).name: e["code"] for e in via_ray["errors"]} == bad

    code, out, _ = run(env, "jobs", via_ray["job_id"], "--json")
    assert code == 0 and json.loads(out)["executor"] == "ray"
    code, out, _ = run(env, "doctor", "--json")
    assert code == 0 and json.loads(out)["consistent"] is True
    code, out, _ = run(env, "documents", "--json")
    code_local, out_local, _ = run(local_env, "documents", "--json")
    assert json.loads(out) == json.loads(out_local)


def test_an_unreachable_ray_cluster_is_a_clear_error_and_a_failed_job(env: dict[str, str], tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    code, _, err = run(env, "ingest", str(corpus), "--executor", "ray", "--ray-address", "ray://127.0.0.1:1")
    assert code == 1
    assert "Error: cannot connect to the Ray cluster at ray://127.0.0.1:1" in err and "KAG_RAY_ADDRESS" in err
    code, out, _ = run(env, "jobs", "--json")
    [job] = json.loads(out)
    assert job["status"] == "failed" and job["executor"] == "ray" and "Ray cluster" in job["error"]
    code, out, _ = run(env, "documents", "--json")
    assert json.loads(out) == []

    code, _, err = run(env, "ingest", str(corpus), "--executor", "ray", "--ray-address", "nonsense")
    assert code == 1 and "cannot read the Ray address" in err


def test_a_missing_ray_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.ray_executor import import_ray
    from kag.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when it is not installed
    with pytest.raises(MissingDependencyError, match=r"kag\[ray\]"):
        import_ray()


def test_an_unknown_executor_is_refused_by_the_cli(env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = run(env, "ingest", str(tmp_path), "--executor", "dask")
    assert code == 2 and "dask" in err


def test_the_qdrant_lexical_backend_without_a_server_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    code, _, err = run(env | {"KAG_LEXICAL_BACKEND": "qdrant"}, "ingest", str(corpus))
    assert code == 1 and "needs a Qdrant server" in err and "KAG_QDRANT_URL" in err
