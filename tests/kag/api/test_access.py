"""Each role x each endpoint, including the denials; collection scopes applied inside the stores."""

from __future__ import annotations

from typing import Any

import pytest

from kag.api.auth import PERMISSIONS, Action
from kag.keys import Role
from tests.kag.api.conftest import Api

# (method, path, request kwargs, the action the route needs); allowed calls are harmless on shared state
ENDPOINTS: list[tuple[str, str, dict[str, Any], Action]] = [
    ("GET", "/v1/me", {}, Action.WHOAMI),
    ("GET", "/v1/collections", {}, Action.COLLECTIONS_READ),
    ("GET", "/v1/collections/hr", {}, Action.COLLECTIONS_READ),
    ("POST", "/v1/collections", {"json": {"name": "hr"}}, Action.COLLECTIONS_CREATE),
    ("DELETE", "/v1/collections/no-such-collection", {}, Action.COLLECTIONS_DELETE),
    ("GET", "/v1/documents", {}, Action.DOCUMENTS_READ),
    ("GET", "/v1/documents/d_missing", {}, Action.DOCUMENTS_READ),
    ("GET", "/v1/documents/d_missing/text", {}, Action.DOCUMENTS_READ),
    ("DELETE", "/v1/documents/d_missing", {}, Action.DOCUMENTS_WRITE),
    ("GET", "/v1/graph/entities/no-such-entity", {}, Action.DOCUMENTS_READ),
    ("GET", "/v1/graph/entities/no-such-entity/neighbourhood", {}, Action.DOCUMENTS_READ),
    (
        "POST",
        "/v1/collections/hr/documents",
        {"files": [("files", ("matrix-note.txt", b"The matrix test note mentions nothing else.", "text/plain"))]},
        Action.DOCUMENTS_WRITE,
    ),
    ("GET", "/v1/jobs", {}, Action.JOBS_READ),
    ("GET", "/v1/jobs/j_missing", {}, Action.JOBS_READ),
    ("POST", "/v1/search", {"json": {"query": "Redis", "k": 3}}, Action.SEARCH),
    ("POST", "/v1/ask", {"json": {"question": "Which cache does the Atlas gateway use?"}}, Action.ASK),
    ("POST", "/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": "What is PTO?"}]}}, Action.ASK),
    ("POST", "/v1/embed", {"json": {"texts": ["hello"]}}, Action.MODELS),
    ("POST", "/v1/embeddings", {"json": {"input": "hello"}}, Action.MODELS),
    ("GET", "/v1/models", {}, Action.MODELS),
    ("POST", "/v1/generate", {"json": {"prompt": "Hello", "max_tokens": 2}}, Action.MODELS),
    ("GET", "/v1/audit", {}, Action.AUDIT_READ),
    ("GET", "/v1/audit/verify", {}, Action.AUDIT_READ),
    ("GET", "/v1/audit/head", {}, Action.AUDIT_READ),
    ("GET", "/v1/audit/export", {}, Action.AUDIT_READ),
    ("GET", "/v1/audit/a_missing", {}, Action.AUDIT_READ),
    ("GET", "/v1/keys", {}, Action.KEYS_MANAGE),
    ("POST", "/v1/keys", {"json": {"name": "m", "role": "reader", "collections": ["hr"]}}, Action.KEYS_MANAGE),
    ("DELETE", "/v1/keys/k_missing", {}, Action.KEYS_MANAGE),
]


def test_the_matrix_covers_every_route_and_action(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops if p.startswith("/v1/")}
    covered = set()
    for method, path, _, _ in ENDPOINTS:
        # an exact path wins over a template ("/v1/audit/verify" before "/v1/audit/{record_id}")
        ordered = sorted(routes, key=lambda r: ("{" in r[1], r))
        template = next((r for r in ordered if r[0] == method and _matches(r[1], path)), None)
        assert template is not None, (method, path)
        covered.add(template)
    assert covered == routes
    assert {a for *_, a in ENDPOINTS} == set(Action)


def _matches(template: str, path: str) -> bool:
    t, p = template.strip("/").split("/"), path.strip("/").split("/")
    return len(t) == len(p) and all(a == b or a.startswith("{") for a, b in zip(t, p, strict=True))


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_role_by_endpoint(api: Api, role: str) -> None:
    for method, path, kwargs, action in ENDPOINTS:
        r = api.client.request(method, path, headers=api.h(role), **kwargs)
        allowed = Role(role) in PERMISSIONS[action]
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        denied_by_role = r.status_code == 403 and (body["error"]["details"] or {}).get("action") == action.value
        if allowed:
            assert not denied_by_role and r.status_code < 500 and r.status_code != 401, (role, method, path, r.text)
        else:
            assert denied_by_role, (role, method, path, r.status_code, r.text)
            article = "an" if role in ("admin", "auditor") else "a"
            assert body["error"]["code"] == "forbidden" and f"{article} {role} key may not" in body["error"]["message"]


def test_no_key_bad_key_and_revoked_key_get_401_everywhere(api: Api) -> None:
    from kag.keys import KeyStore

    store = KeyStore(api.runtime.stores.ledger)
    key, secret = store.create("soon-revoked", "admin", ["*"])
    assert api.client.get("/v1/me", headers={"X-API-Key": secret}).status_code == 200
    store.revoke(key.id)
    for headers in ({}, {"Authorization": "Bearer kag_unknown"}, {"Authorization": f"Bearer {secret}"}):
        for method, path, kwargs, _ in ENDPOINTS:
            r = api.client.request(method, path, headers=headers, **kwargs)
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"]["code"] == "unauthenticated" and r.headers["www-authenticate"].startswith("Bearer")
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/ui/audit"):
        assert api.client.get(open_path).status_code == 200, open_path


def test_search_and_ask_never_see_collections_outside_the_key(api: Api) -> None:
    # the eng reader asks about hr's content: the store query holds only eng, so no hr chunk can appear
    r = api.client.post(
        "/v1/search", json={"query": "Atlas gateway Redis sessions", "k": 20}, headers=api.h("reader_eng")
    )
    assert r.status_code == 200
    assert r.json()["collections"] == ["eng"] and {h["collection"] for h in r.json()["results"]} <= {"eng"}
    r = api.client.post("/v1/search", json={"query": "Redis", "collections": ["hr"]}, headers=api.h("reader_eng"))
    assert r.status_code == 403 and r.json()["error"]["details"]["collections"] == ["hr"]
    r = api.client.post("/v1/search", json={"query": "Redis", "collections": ["nope"]}, headers=api.h("admin"))
    assert r.status_code == 404
    # the retriever gets exactly the key's collections as its access set
    seen: list[Any] = []
    svc = api.client.app.state.services  # type: ignore[attr-defined]
    retriever = svc.retriever("hybrid")
    original = retriever.retrieve

    def spy(query: str, k: int, collections: Any, document_ids: Any = None) -> Any:
        seen.append(sorted(collections))
        return original(query, k, collections, document_ids)

    retriever.retrieve = spy  # type: ignore[method-assign]
    try:
        api.client.post("/v1/search", json={"query": "Kestrel releases"}, headers=api.h("reader_eng"))
        api.client.post("/v1/search", json={"query": "Kestrel releases"}, headers=api.h("admin"))
    finally:
        del retriever.retrieve
    assert seen == [["eng"], ["eng", "hr"]]


def test_documents_and_audit_outside_the_scope_do_not_exist(api: Api, answered: dict[str, Any]) -> None:
    hr_doc = answered["sources"][0]["document_id"]
    assert api.client.get(f"/v1/documents/{hr_doc}", headers=api.h("auditor")).status_code == 200
    r = api.client.get(f"/v1/documents/{hr_doc}", headers=api.h("reader_eng"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    docs = api.client.get("/v1/documents", headers=api.h("reader_eng")).json()
    assert {d["collection"] for d in docs["documents"]} == {"eng"}
    listed = api.client.get("/v1/collections", headers=api.h("reader_eng")).json()["collections"]
    assert [c["name"] for c in listed] == ["eng"]
    assert api.client.get("/v1/collections/hr", headers=api.h("reader_eng")).status_code == 403
    audit_id = answered["audit_id"]
    assert api.client.get(f"/v1/audit/{audit_id}", headers=api.h("auditor")).status_code == 200
    from kag.keys import KeyStore

    _, eng_auditor = KeyStore(api.runtime.stores.ledger).create("eng-auditor", "auditor", ["eng"])
    h = {"Authorization": f"Bearer {eng_auditor}"}
    assert api.client.get(f"/v1/audit/{audit_id}", headers=h).status_code == 404
    assert all(r["collections"] == ["eng"] for r in api.client.get("/v1/audit", headers=h).json()["records"])
    assert api.client.get("/v1/audit?collection=hr", headers=h).status_code == 403


def test_an_auditor_asking_is_told_in_plain_words(api: Api) -> None:
    for path, body in (
        ("/v1/ask", {"question": "What is PTO?"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "What is PTO?"}]}),
    ):
        r = api.client.post(path, json=body, headers=api.h("auditor"))
        assert r.status_code == 403 and r.json()["error"]["message"] == "an auditor key may not ask", r.text
