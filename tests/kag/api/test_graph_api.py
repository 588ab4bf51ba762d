"""GET /v1/graph/entities/{name}[/neighbourhood] on a real runtime: scope, grades, conflicts, evidence, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.kag.api.conftest import api_settings
from tests.kag.graph_docs import HORMONES, METABOLISM, REGULATION, TRIAL

SHARED_MODELS = ("embedder", "generator", "extractor", "query_extractor")


@dataclass
class GraphApi:
    client: TestClient
    keys: dict[str, str]
    runtime: Any

    def h(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


def _ingest(runtime: Any, root: Path, collection: str, name: str, text: str) -> None:
    folder = root / f"{collection}-{name}"
    folder.mkdir()
    (folder / name).write_text(text)
    assert runtime.ingestor.ingest([folder], collection).status == "completed"


@pytest.fixture(scope="module")
def graph_api(api_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphApi]:
    """Its own data dir (collections `bio` and `chem`, both with an entity "insulin"), sharing the session's
    loaded models; documents go through real ingestion, one job each so their timestamps are ordered."""
    from kag.api import create_app
    from kag.cli.runtime import Runtime
    from kag.keys import KeyStore

    root = tmp_path_factory.mktemp("graph-api")
    settings = api_settings(root / "data")
    runtime = Runtime(settings)
    for name in SHARED_MODELS:
        runtime.__dict__[name] = getattr(api_runtime, name)
    _ingest(runtime, root, "bio", "hormones.md", "---\nsource_kind: paper\n---\n" + HORMONES)
    _ingest(runtime, root, "bio", "regulation.md", REGULATION)
    _ingest(runtime, root, "chem", "metabolism.md", "---\nsource_kind: benchmark\n---\n" + METABOLISM)
    store = KeyStore(runtime.stores.ledger)
    keys = {
        "bio": store.create("bio-reader", "reader", ["bio"], default_collection="bio")[1],
        "chem": store.create("chem-auditor", "auditor", ["chem"])[1],
        "all": store.create("all-auditor", "auditor", ["*"])[1],
    }
    try:
        with TestClient(create_app(settings, runtime), raise_server_exceptions=False) as client:
            yield GraphApi(client, keys, runtime)
    finally:
        for name in SHARED_MODELS:
            runtime.__dict__.pop(name, None)  # the session's models stay loaded for the other tests
        runtime.close()


def _entity(api: GraphApi, key: str, name: str = "insulin", **params: Any) -> Any:
    return api.client.get(f"/v1/graph/entities/{name}", params=params, headers=api.h(key))


def test_entity_lookup_never_crosses_the_key_scope(graph_api: GraphApi) -> None:
    bio = _entity(graph_api, "bio")
    assert bio.status_code == 200, bio.text
    (entity,) = bio.json()["entities"]
    assert entity["collection"] == "bio"
    targets = {r["target"].lower() for r in entity["relations"]} | {r["source"].lower() for r in entity["relations"]}
    assert "glucagon" in targets and "metabolism" not in targets

    (chem,) = _entity(graph_api, "chem").json()["entities"]
    assert chem["collection"] == "chem" and chem["entity_id"] != entity["entity_id"]
    others = {r["target"].lower() for r in chem["relations"]} | {r["source"].lower() for r in chem["relations"]}
    assert "metabolism" in others and "glucagon" not in others
    assert ("insulin", "Influences", "metabolism") in {
        (r["source"].lower(), r["type"], r["target"].lower()) for r in chem["relations"]
    }
    assert all(r["source_kind"] == "benchmark" for r in chem["relations"])

    both = _entity(graph_api, "all").json()["entities"]
    assert [e["collection"] for e in both] == ["bio", "chem"]

    # asking for the other collection by name is refused, not answered empty
    r = _entity(graph_api, "bio", collection="chem")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    # an entity only the other collection has does not exist for this key
    r = _entity(graph_api, "bio", name="metabolism")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert "no entity named 'metabolism' in the collection bio" in r.json()["error"]["message"]
    r = _entity(graph_api, "chem", name="glucagon")
    assert r.status_code == 404
    nb = graph_api.client.get("/v1/graph/entities/glucagon/neighbourhood", headers=graph_api.h("chem"))
    assert nb.status_code == 404


def test_relations_carry_grade_kind_conflict_and_document_evidence(graph_api: GraphApi) -> None:
    (entity,) = _entity(graph_api, "bio").json()["entities"]
    by_type = {r["type"]: r for r in entity["relations"] if r["target"] == "glucagon"}
    assert by_type["OppositeTo"]["source_kind"] == "paper" and by_type["Influences"]["source_kind"] == "document"
    assert by_type["OppositeTo"]["grade"] == by_type["Influences"]["grade"] == "B"
    assert by_type["Influences"]["conflict"] == "won" and by_type["OppositeTo"]["conflict"] == "lost"
    ev = by_type["OppositeTo"]["evidence"]
    doc = graph_api.client.get(f"/v1/documents/{ev['document_id']}?include_text=true", headers=graph_api.h("bio"))
    assert doc.status_code == 200
    text = doc.json()["text"]
    assert text[ev["doc_start"] : ev["doc_end"]] == ev["quote"] == "Insulin opposes glucagon in the liver."
    assert ev["doc_start"] == text.index("Insulin opposes")


def test_neighbourhood_has_typed_edges_and_validates_hops(graph_api: GraphApi) -> None:
    r = graph_api.client.get("/v1/graph/entities/Insulin/neighbourhood?hops=1", headers=graph_api.h("bio"))
    assert r.status_code == 200, r.text
    (hood,) = r.json()["neighbourhoods"]
    assert hood["collection"] == "bio" and hood["hops"] == 1 and hood["entity"]["key"] == "insulin"
    names = {n["name"] for n in hood["nodes"]}
    assert {"Insulin", "glucagon"} <= names and "metabolism" not in {n.lower() for n in names}
    ids = {n["id"] for n in hood["nodes"]}
    assert all(e["source_id"] in ids and e["target_id"] in ids for e in hood["edges"])
    assert {"OppositeTo", "Influences"} <= {e["type"] for e in hood["edges"]}
    for hops in (0, 4, "x"):
        bad = graph_api.client.get(f"/v1/graph/entities/insulin/neighbourhood?hops={hops}", headers=graph_api.h("bio"))
        assert bad.status_code == 422 and "error" in bad.json()
    assert graph_api.client.get("/v1/graph/entities/insulin").status_code == 401


def test_a_reproducible_second_document_regrades_and_flips_the_conflict(graph_api: GraphApi, tmp_path: Path) -> None:
    _ingest(graph_api.runtime, tmp_path, "bio", "trial.md", "---\nreproducible: true\n---\n" + TRIAL)
    (entity,) = _entity(graph_api, "bio").json()["entities"]
    by_type = {r["type"]: r for r in entity["relations"] if r["target"] == "glucagon"}
    assert by_type["OppositeTo"]["grade"] == "A" and by_type["OppositeTo"]["documents"] == 2
    assert by_type["OppositeTo"]["conflict"] == "won" and by_type["Influences"]["conflict"] == "lost"


def test_the_audit_record_says_which_graph_relation_won(graph_api: GraphApi) -> None:
    r = graph_api.client.post(
        "/v1/ask", json={"question": "How does insulin act on glucagon?"}, headers=graph_api.h("bio")
    )
    assert r.status_code == 200, r.text
    body = graph_api.client.get(f"/v1/audit/{r.json()['audit_id']}", headers=graph_api.h("all")).json()
    record = body.get("body", body)
    assert record["retrieval"]["per_retriever"]["graph"], "the graph retriever must have found the insulin chunks"
    conflicts = record["graph_conflicts"]
    (conflict,) = [c for c in conflicts if {c["winner"]["type"], c["loser"]["type"]} == {"Influences", "OppositeTo"}]
    assert conflict["collection"] == "bio" and {e.lower() for e in conflict["entities"]} == {"insulin", "glucagon"}
    # the same winner the entity view shows, for the reason the grades give
    (entity,) = _entity(graph_api, "bio").json()["entities"]
    (shown,) = [r for r in entity["relations"] if r["target"] == "glucagon" and r["conflict"] == "won"]
    won, lost = conflict["winner"], conflict["loser"]
    assert won["type"] == shown["type"] and won["relation_id"] == shown["relation_id"]
    assert conflict["rule"] == ("grade" if won["grade"] != lost["grade"] else "newer")
    assert won["grade"] <= lost["grade"]
    assert won["evidence"]["quote"] and lost["evidence"]["quote"]
