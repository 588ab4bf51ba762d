"""Every endpoint in-process, on the real runtime: collections, uploads and jobs, search, ask (JSON and SSE),
embeddings, generation, the OpenAI surface, audit, metrics and tracing."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
import pytest

from kag.audit import canonical_json, chain_hash
from tests.kag.api.conftest import Api
from tests.kag.api.test_errors import app_with


def wait_job(api: Api, job_id: str, headers: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            events.append((name, "\n".join(data)))
    return events


def test_health_readiness_and_docs(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["collections"] >= 2 and ready["llm"].endswith(".gguf")
    assert ready["embedding_runtime"] == "onnx"  # the shipped default, as the session's embedder runs it
    assert "/v1/ask" in api.client.get("/openapi.json").json()["paths"]
    assert api.client.get("/docs").status_code == 200


def test_collection_upload_job_documents_delete_round_trip(api: Api) -> None:
    h = api.h("admin")
    c = api.client
    created = c.post("/v1/collections", json={"name": "legal", "description": "contracts"}, headers=h)
    assert created.status_code == 201 and created.json()["documents"] == 0
    files = [
        ("files", ("nda.md", b"# NDA\n\nThe mutual NDA with Vireo Labs expires on 2027-03-31.\n", "text/markdown")),
        ("files", ("broken.pdf", b"%PDF-1.7 garbage", "application/pdf")),
        ("files", ("terms.txt", b"Payment terms are net 45 days for every supplier.\n", "text/plain")),
    ]
    r = c.post("/v1/collections/legal/documents", files=files, headers=h)
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    assert r.json()["status"] in ("queued", "running") and r.json()["files"] == ["nda.md", "broken.pdf", "terms.txt"]
    job = wait_job(api, r.json()["id"], h)
    assert job["status"] == "completed" and job["documents_added"] == 2 and job["documents_failed"] == 1
    assert job["files_total"] == 3 and job["files_done"] == 3 and job["progress"] == 1.0 and job["chunks_added"] >= 2
    assert job["errors"] == [{"file": "broken.pdf", "code": "corrupt_document", "message": job["errors"][0]["message"]}]
    assert "/" not in job["errors"][0]["message"].split(":")[0]  # no server paths leak
    assert any(j["id"] == job["id"] for j in c.get("/v1/jobs?collection=legal", headers=h).json()["jobs"])

    docs = c.get("/v1/documents?collection=legal", headers=h).json()
    assert docs["total"] == 2 and {d["title"] for d in docs["documents"]} == {
        "NDA",
        "Payment terms are net 45 days for every supplier.",
    }
    nda = next(d for d in docs["documents"] if d["title"] == "NDA")
    detail = c.get(f"/v1/documents/{nda['id']}?include_text=true", headers=h).json()
    assert detail["chunks"] and all(
        detail["text"][ch["char_start"] : ch["char_end"]] == ch["text"] for ch in detail["chunks"]
    )
    span = c.get(f"/v1/documents/{nda['id']}/text?start=2&end=5", headers=h).json()
    assert span["text"] == detail["text"][2:5] and span["length"] == len(detail["text"])

    # uploading the same file again changes nothing; a changed file becomes version 2 of the same document
    again = wait_job(api, c.post("/v1/collections/legal/documents", files=files[:1], headers=h).json()["id"], h)
    assert again["documents_unchanged"] == 1 and again["chunks_added"] == 0
    changed = [("files", ("nda.md", b"# NDA\n\nThe mutual NDA with Vireo Labs expires on 2028-01-31.\n", "text/md"))]
    updated = wait_job(api, c.post("/v1/collections/legal/documents", files=changed, headers=h).json()["id"], h)
    assert updated["documents_updated"] == 1
    assert c.get(f"/v1/documents/{nda['id']}", headers=h).json()["version"] == 2
    hits = c.post(
        "/v1/search", json={"query": "When does the NDA with Vireo expire?", "collections": ["legal"]}, headers=h
    ).json()["results"]
    assert hits and "2028-01-31" in hits[0]["text"] and not any("2027-03-31" in x["text"] for x in hits)

    deleted = c.delete(f"/v1/documents/{nda['id']}", headers=h)
    assert deleted.status_code == 200 and c.get(f"/v1/documents/{nda['id']}", headers=h).status_code == 404
    assert c.get("/v1/collections/legal", headers=h).json()["documents"] == 1
    assert c.delete("/v1/collections/legal", headers=h).status_code == 200
    ledger, stores = api.runtime.stores.ledger, api.runtime.stores
    assert "legal" not in ledger.collections() and not ledger.chunk_ids("legal")
    assert not stores.vectors.chunk_ids("legal") and not stores.fulltext.chunk_ids("legal")
    assert not ledger.jobs(collections=["legal"]) and not (api.settings.data_dir / "uploads" / "legal").exists()
    assert c.get("/v1/collections/legal", headers=h).status_code == 404


def test_deleting_while_a_job_is_queued_is_a_conflict(api: Api) -> None:
    h = api.h("admin")
    svc = api.client.app.state.services  # type: ignore[attr-defined]
    svc.worker._queue.append(("j_fake", "hr"))  # a job waiting for the worker
    try:
        r = api.client.delete("/v1/collections/hr", headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        doc = api.client.get("/v1/documents?collection=hr", headers=h).json()["documents"][0]["id"]
        assert api.client.delete(f"/v1/documents/{doc}", headers=h).status_code == 409
    finally:
        svc.worker._queue.remove(("j_fake", "hr"))
    assert "hr" in api.runtime.stores.ledger.collections()


def test_full_ingest_queue_is_503_before_anything_is_staged(api: Api) -> None:
    with app_with(api, api_ingest_queue_size=1) as (c, h):
        svc = c.app.state.services  # type: ignore[attr-defined]
        svc.worker._queue.append(("j_fake", "hr"))
        try:
            r = c.post("/v1/collections/hr/documents", files=[("files", ("x.txt", b"x", "text/plain"))], headers=h)
            assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"]
        finally:
            svc.worker._queue.clear()


@pytest.mark.parametrize("mode", ["dense", "lexical", "graph", "hybrid"])
def test_search_modes_with_scores_and_provenance(api: Api, mode: str) -> None:
    r = api.client.post(
        "/v1/search",
        json={"query": "Which cache does the Atlas gateway use?", "mode": mode, "k": 5},
        headers=api.h("reader"),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["mode"] == mode and body["collections"] == ["hr"] and body["results"]
    for hit in body["results"]:
        doc = api.runtime.stores.ledger.get_document(hit["document_id"])
        assert doc.text[hit["char_start"] : hit["char_end"]] == hit["text"] and isinstance(hit["score"], float)
    if mode != "graph":
        assert any("Redis" in h["text"] for h in body["results"][:3])


def test_search_filters_are_applied_in_the_store(api: Api) -> None:
    h = api.h("reader")
    docs = api.client.get("/v1/documents?collection=hr", headers=h).json()["documents"]
    runbook = next(d for d in docs if d["title"].startswith("Atlas"))
    r = api.client.post("/v1/search", json={"query": "Redis", "filters": {"document_ids": [runbook["id"]]}}, headers=h)
    assert {x["document_id"] for x in r.json()["results"]} == {runbook["id"]}
    r = api.client.post("/v1/search", json={"query": "Redis", "filters": {"source_prefix": "/nowhere/"}}, headers=h)
    assert r.json()["results"] == []
    r = api.client.post("/v1/search", json={"query": "Redis", "filters": {"since": "2999-01-01T00:00:00Z"}}, headers=h)
    assert r.json()["results"] == []


def test_ask_json_is_verified_cited_and_audited(api: Api, answered: dict[str, Any]) -> None:
    assert answered["collections"] == ["hr"] and answered["audit_id"].startswith("a_")
    assert answered["answer"] and set(answered["timings_ms"]) >= {"retrieve", "generate", "verify", "audit", "total"}
    ledger = api.runtime.stores.ledger
    for c in answered["citations"]:
        assert ledger.get_document(c["document_id"]).text[c["char_start"] : c["char_end"]] == c["quote"]
    for s in answered["sentences"]:
        assert s["action"] in ("kept", "flagged", "dropped", "replaced") and isinstance(s["supported"], bool)
    record = api.client.get(f"/v1/audit/{answered['audit_id']}", headers=api.h("auditor")).json()
    assert record["intact"] and record["body"]["answer"] == answered["answer"]
    assert record["principal"] == api.ids["reader"] and record["body"]["model"]["sha256"]


def test_ask_streams_tokens_then_one_final_event(api: Api) -> None:
    body = {"question": "How many days of paid time off do employees accrue per month?", "stream": True}
    with api.client.stream("POST", "/v1/ask", json=body, headers=api.h("reader")) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.read().decode())
    names = [e for e, _ in events]
    assert names[-1] == "final" and names.count("final") == 1 and set(names[:-1]) == {"token"}
    final = json.loads(events[-1][1])
    raw = "".join(json.loads(d)["text"] for e, d in events if e == "token")
    record = api.client.get(f"/v1/audit/{final['audit_id']}", headers=api.h("auditor")).json()
    assert record["body"]["raw_output"] == raw and final["answer"] == record["body"]["answer"]
    # Accept: text/event-stream asks for the same without the flag
    with api.client.stream(
        "POST", "/v1/ask", json={"question": "What is PTO?"}, headers={**api.h("reader"), "Accept": "text/event-stream"}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert parse_sse(r.read().decode())[-1][0] == "final"


def test_ask_failure_after_streaming_started_is_an_error_event(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from kag.errors import AuditWriteError

    audit = api.runtime.answer_pipeline.audit

    def refuse(body: Any) -> Any:
        raise AuditWriteError("cannot write the audit record: disk full", hint="the answer must not be returned")

    monkeypatch.setattr(audit, "append", refuse)
    with api.client.stream(
        "POST", "/v1/ask", json={"question": "What is PTO?", "stream": True}, headers=api.h("reader")
    ) as r:
        events = parse_sse(r.read().decode())
    assert events[-1][0] == "error" and "final" not in [e for e, _ in events]
    assert json.loads(events[-1][1])["error"]["code"] == "audit_write_failed"
    r = api.client.post("/v1/ask", json={"question": "What is PTO?"}, headers=api.h("reader"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_write_failed" and "answer" not in r.json()


def test_embed_batches_concurrent_requests(api: Api, embedder: Any) -> None:
    from kag.api.batching import MicroBatcher

    calls: list[int] = []

    def counting(texts: Any) -> Any:
        calls.append(len(texts))
        return embedder.embed(texts)

    batcher = MicroBatcher(counting, max_batch=64, max_wait_s=0.05)
    texts = [f"text number {i} about Redis" for i in range(16)]
    futures = [batcher.submit([t]) for t in texts]
    got = np.vstack([f.result(timeout=30) for f in futures])
    batcher.close()
    assert len(calls) < len(texts) and sum(calls) == len(texts)
    assert np.allclose(got, embedder.embed(texts), atol=1e-5)

    r = api.client.post("/v1/embed", json={"texts": ["hello world", "Redis sessions"]}, headers=api.h("reader"))
    body = r.json()
    assert r.status_code == 200 and body["dim"] == 384 and len(body["embeddings"]) == 2
    assert np.allclose(body["embeddings"], embedder.embed(["hello world", "Redis sessions"]), atol=1e-5)
    results: list[int] = []

    def one(i: int) -> None:
        results.append(api.client.post("/v1/embed", json={"texts": [f"t{i}"]}, headers=api.h("reader")).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 12
    assert "kag_embed_batch_texts_count" in api.client.get("/metrics").text


def test_generate_json_and_stream_are_reproducible(api: Api) -> None:
    h = api.h("reader")
    req = {
        "prompt": "The capital of France is",
        "max_tokens": 6,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.9,
        "seed": 7,
    }
    a = api.client.post("/v1/generate", json=req, headers=h).json()
    b = api.client.post("/v1/generate", json=req, headers=h).json()
    assert a["text"] == b["text"] and a["usage"]["completion_tokens"] <= 6 and a["sampling"]["top_k"] == 20
    assert a["finish_reason"] in ("length", "stop") and a["model"]["sha256"]
    with api.client.stream("POST", "/v1/generate", json={**req, "stream": True}, headers=h) as r:
        events = parse_sse(r.read().decode())
    tokens = "".join(json.loads(d)["text"] for e, d in events if e == "token")
    assert tokens == a["text"] and json.loads(events[-1][1])["text"] == a["text"]
    chat = api.client.post(
        "/v1/generate", json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}, headers=h
    )
    assert chat.status_code == 200 and chat.json()["usage"]["prompt_tokens"] > 3


def test_openai_client_in_process(api: Api) -> None:
    import openai

    client = openai.OpenAI(base_url="http://testserver/v1", api_key=api.keys["reader"], http_client=api.client)
    reply = client.chat.completions.create(
        model="kag", messages=[{"role": "user", "content": "Which cache does the Atlas gateway use?"}]
    )
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    content = reply.choices[0].message.content
    extra = reply.model_extra or {}
    assert content and extra["kag"]["audit_id"] and reply.usage and reply.usage.completion_tokens > 0
    ledger = api.runtime.stores.ledger
    for c in extra["citations"]:
        assert ledger.get_document(c["document_id"]).text[c["char_start"] : c["char_end"]] == c["quote"]
    stream = client.chat.completions.create(
        model="kag", messages=[{"role": "user", "content": "Which cache does the Atlas gateway use?"}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == content  # same greedy answer
    assert (chunks[-1].model_extra or {})["citations"] == extra["citations"]
    models = client.models.list()
    assert "kag" in {m.id for m in models.data}
    emb = client.embeddings.create(model="kag", input=["hello", "world"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key="kag_wrong", http_client=api.client).models.list()
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(
            base_url="http://testserver/v1", api_key=api.keys["auditor"], http_client=api.client
        ).chat.completions.create(model="kag", messages=[{"role": "user", "content": "hi"}])


def test_audit_list_filters_get_and_verify(api: Api, answered: dict[str, Any]) -> None:
    h = api.h("auditor")
    listed = api.client.get("/v1/audit", headers=h).json()["records"]
    assert listed and listed[0]["seq"] > listed[-1]["seq"] if len(listed) > 1 else listed
    mine = api.client.get(f"/v1/audit?principal={api.ids['reader']}", headers=h).json()["records"]
    assert answered["audit_id"] in {r["id"] for r in mine} and all(r["principal"] == api.ids["reader"] for r in mine)
    assert api.client.get("/v1/audit?principal=nobody", headers=h).json()["records"] == []
    assert api.client.get("/v1/audit?until=2000-01-01T00:00:00Z", headers=h).json()["records"] == []
    summary = next(r for r in mine if r["id"] == answered["audit_id"])
    assert summary["sentences"] == len(answered["sentences"]) and summary["question"] == answered["question"]
    rec = api.client.get(f"/v1/audit/{answered['audit_id']}", headers=h).json()
    assert rec["hash"] == chain_hash(rec["prev_hash"], canonical_json(rec["body"]))
    assert rec["body"]["prompt"] and rec["body"]["sampling"]["seed"] == api.settings.llm_seed
    chain = api.client.get("/v1/audit/verify", headers=h).json()
    assert chain["ok"] and chain["checked"] >= 1 and chain["broken"] is None


def test_metrics_count_requests_stages_tokens_and_queues(api: Api, answered: dict[str, Any]) -> None:
    text = api.client.get("/metrics").text
    assert 'kag_http_requests_total{method="POST",route="/v1/ask",status="200"}' in text
    assert 'route="/v1/documents/{document_id}"' in text or 'route="/v1/audit/{record_id}"' in text
    assert 'kag_pipeline_stage_seconds_count{stage="generate"}' in text
    assert 'kag_pipeline_stage_seconds_count{stage="retrieve"}' in text
    assert 'kag_tokens_generated_total{endpoint="ask"}' in text
    assert "kag_generation_queue_depth 0.0" in text and "kag_ingest_queue_depth" in text
    assert "kag_chunks_ingested_total" in text


def test_traces_go_to_the_otlp_endpoint_only_when_set(api: Api) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/v1/traces"
        with app_with(api, api_otlp_endpoint=endpoint) as (c, h):
            assert c.post("/v1/ask", json={"question": "What is PTO?"}, headers=h).status_code == 200
        names = set()
        for payload in received:
            request = ExportTraceServiceRequest()
            request.ParseFromString(payload)
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    names.update(span.name for span in ss.spans)
        assert "POST /v1/ask" in names
        assert {"kag.answer", "kag.retrieve", "kag.rerank", "kag.generate", "kag.verify", "kag.audit"} <= names
    finally:
        server.shutdown()
    assert api.client.app.state.services.tracer_provider is None  # type: ignore[attr-defined]


def test_interrupted_upload_job_resumes_at_start_up(api: Api) -> None:
    ledger = api.runtime.stores.ledger
    job_id = "j_resume_test"
    staging = api.settings.data_dir / "uploads" / ".staging" / job_id
    staging.mkdir(parents=True)
    (staging / "resumed.txt").write_text("The resumed upload says the Wren sensor ships in May.")
    ledger.ensure_collection("hr")
    ledger.queue_job(job_id, "hr", {"source": "api-upload", "files": ["resumed.txt"], "principal": "k_x"})
    ledger.finish_job(job_id, "interrupted")
    with app_with(api) as (c, h):
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}", headers=h).json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        job = c.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["documents_added"] == 1 and not staging.exists()
    docs = api.client.get("/v1/documents?collection=hr&limit=1000", headers=api.h("admin")).json()["documents"]
    doc = next(d for d in docs if d["title"].startswith("The resumed upload"))
    assert api.client.delete(f"/v1/documents/{doc['id']}", headers=api.h("admin")).status_code == 200
