"""One real runtime (SQLite ledger, Qdrant Edge, Tantivy, the bundled models) over a small ingested corpus,
shared by the API tests of the session; apps with other limits reuse it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kag.settings import Settings
from tests.ingest.corpus_factory import make_corpus

ENG_DOC = """Kestrel deployment guide

Kestrel releases are deployed every Tuesday by the platform team. Rollbacks use the blue-green switch.
"""


def api_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "chunk_size": 64,
        "chunk_overlap": 8,
        "llm_max_tokens": 24,
        "llm_n_ctx": 2048,
        "api_rate_limit_per_minute": 0,
    }
    base.update(overrides)
    return Settings(_env_file=None, **base)


@dataclass
class Api:
    """A TestClient of a running app and a key of each role."""

    client: TestClient
    keys: dict[str, str]
    runtime: Any
    settings: Settings
    ids: dict[str, str] = field(default_factory=dict)

    def h(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def make_keys(ledger: Any) -> tuple[dict[str, str], dict[str, str]]:
    from kag.keys import KeyStore

    store = KeyStore(ledger)
    specs = {
        "admin": ("admin", ["*"], None),
        "writer": ("writer", ["hr"], "hr"),
        "reader": ("reader", ["hr"], "hr"),
        "auditor": ("auditor", ["hr"], None),
        "reader_eng": ("reader", ["eng"], "eng"),
        "auditor_all": ("auditor", ["*"], None),
    }
    secrets, ids = {}, {}
    for name, (role, collections, default) in specs.items():
        key, secret = store.create(f"test-{name}", role, collections, default_collection=default)
        secrets[name], ids[name] = secret, key.id
    return secrets, ids


@pytest.fixture(scope="session")
def api_runtime(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[Any]:
    """The shared runtime: collection `hr` (the corpus factory's six documents) and `eng` (one document)."""
    from kag.cli.runtime import Runtime

    root = tmp_path_factory.mktemp("api")
    settings = api_settings(root / "data")
    runtime = Runtime(settings)
    runtime.__dict__["embedder"] = embedder  # the session's already loaded model
    corpus = make_corpus(root / "corpus")
    eng = root / "eng"
    eng.mkdir()
    (eng / "kestrel.md").write_text(ENG_DOC)
    assert runtime.ingestor.ingest([corpus], "hr").status == "completed"
    assert runtime.ingestor.ingest([eng], "eng").status == "completed"
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def api(api_runtime: Any) -> Iterator[Api]:
    from kag.api import create_app

    settings = api_runtime.settings
    keys, ids = make_keys(api_runtime.stores.ledger)
    app = create_app(settings, api_runtime)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client=client, keys=keys, runtime=api_runtime, settings=settings, ids=ids)


@pytest.fixture(scope="session")
def answered(api: Api) -> dict[str, Any]:
    """One real answer over `hr`, asked once for every test that needs an audit record with citations."""
    r = api.client.post(
        "/v1/ask", json={"question": "Which cache does the Atlas gateway use for sessions?"}, headers=api.h("reader")
    )
    assert r.status_code == 200, r.text
    return r.json()


@dataclass
class Live:
    url: str
    keys: dict[str, str]
    server: Any
    answer: dict[str, Any]


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A real `kag serve` process on a free loopback port, with the small corpus uploaded over HTTP and one
    question answered (so the audit log has a record with citations)."""
    import httpx

    from tests.kag.api.live import LiveServer, upload, wait_job

    root = tmp_path_factory.mktemp("live")
    corpus = make_corpus(root / "corpus")
    server = LiveServer(
        root / "data", env={"KAG_CHUNK_SIZE": "64", "KAG_CHUNK_OVERLAP": "8", "KAG_LLM_MAX_TOKENS": "24"}
    )
    keys = {
        "admin": server.create_key("admin", "admin"),
        "reader": server.create_key("hr-reader", "reader", "hr", default="hr"),
        "auditor": server.create_key("auditor", "auditor", "hr"),
    }
    with server:
        job = upload(server.url, keys["admin"], "hr", sorted(corpus.iterdir()))
        assert wait_job(server.url, keys["admin"], job["id"])["status"] == "completed"
        r = httpx.post(
            f"{server.url}/v1/ask",
            json={"question": "Which cache does the Atlas gateway use for sessions?"},
            headers={"Authorization": f"Bearer {keys['reader']}"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        yield Live(url=server.url, keys=keys, server=server, answer=r.json())
