"""Search results and document listings show a document's path under its ingested folder, not the server's
full path, unless KAG_SOURCE_URI=absolute."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.kag.api.conftest import Api

CORPUS_NAMES = {"leave.md", "runbook.txt", "osprey.html", "incident.pdf", "adr.docx", "faq.jsonl"}


def _search(client: TestClient, headers: dict[str, str], **filters: Any) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"query": "Atlas gateway sessions", "collections": ["hr"], "k": 20}
    if filters:
        body["filters"] = filters
    r = client.post("/v1/search", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_search_and_document_listings_show_root_relative_paths(api: Api) -> None:
    # the `api` fixture is shared: other tests may have uploaded files into `hr` (shown by their name)
    results = _search(api.client, api.h("reader"))
    assert results and all(not Path(h["source_uri"]).is_absolute() for h in results)
    assert {h["source_uri"] for h in results} & CORPUS_NAMES
    r = api.client.get("/v1/documents", params={"collection": "hr"}, headers=api.h("reader"))
    assert r.status_code == 200, r.text
    listed = [d for d in r.json()["documents"] if d["source_uri"] in CORPUS_NAMES or "/" not in d["source_uri"]]
    assert CORPUS_NAMES <= {d["source_uri"] for d in listed}
    assert all(not Path(d["source_uri"]).is_absolute() for d in r.json()["documents"])
    one = api.client.get(f"/v1/documents/{listed[0]['id']}", headers=api.h("reader")).json()
    assert one["source_uri"] in CORPUS_NAMES
    # nothing a reader gets names the server's file system
    stored = {d.source_uri for d in api.runtime.stores.ledger.documents("hr")}
    assert all(Path(s).is_absolute() for s in stored)
    assert not any(s in r.text for s in stored)


def test_a_source_prefix_filter_takes_the_path_as_shown(api: Api) -> None:
    results = _search(api.client, api.h("reader"), source_prefix="runbook")
    assert results and {h["source_uri"] for h in results} == {"runbook.txt"}


@pytest.fixture
def absolute_client(api: Api) -> Iterator[TestClient]:
    from kag.api import create_app

    settings = api.settings.model_copy(update={"source_uri": "absolute"})
    with TestClient(create_app(settings, api.runtime), raise_server_exceptions=False) as client:
        yield client


def test_source_uri_absolute_shows_the_full_path(api: Api, absolute_client: TestClient) -> None:
    stored = {d.source_uri for d in api.runtime.stores.ledger.documents("hr")}
    results = _search(absolute_client, api.h("reader"))
    assert results and {h["source_uri"] for h in results} <= stored
    r = absolute_client.get("/v1/documents", params={"collection": "hr"}, headers=api.h("reader"))
    assert {d["source_uri"] for d in r.json()["documents"]} == stored
