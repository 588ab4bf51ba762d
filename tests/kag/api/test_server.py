"""The real server process: HTTP and SSE over loopback, the OpenAI client, graceful shutdown and resume."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kag.api.conftest import Live
from tests.kag.api.live import LiveServer, upload, wait_job
from tests.kag.api.test_endpoints import parse_sse

pytestmark = pytest.mark.slow


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_http_and_sse_against_the_real_server(live: Live) -> None:
    assert httpx.get(f"{live.url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{live.url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    hits = httpx.post(f"{live.url}/v1/search", json={"query": "Redis sessions"}, headers=auth(live.keys["reader"]))
    assert hits.status_code == 200 and any("Redis" in h["text"] for h in hits.json()["results"])
    events: list[tuple[str | None, str]] = []
    with httpx.stream(
        "POST",
        f"{live.url}/v1/ask",
        json={"question": "How many days of PTO do employees accrue per month?"},
        headers={**auth(live.keys["reader"]), "Accept": "text/event-stream"},
        timeout=120,
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        first_token_at = None
        started = time.monotonic()
        buffer = ""
        for text in r.iter_text():
            if first_token_at is None and "event: token" in text:
                first_token_at = time.monotonic() - started
            buffer += text
        events = parse_sse(buffer)
    final = json.loads(events[-1][1])
    assert events[-1][0] == "final" and final["audit_id"] and first_token_at is not None
    record = httpx.get(f"{live.url}/v1/audit/{final['audit_id']}", headers=auth(live.keys["auditor"])).json()
    assert record["intact"] and record["body"]["raw_output"] == "".join(
        json.loads(d)["text"] for e, d in events if e == "token"
    )
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'kag_http_requests_total{method="POST",route="/v1/ask",status="200"}' in metrics


def test_openai_client_against_the_real_server(live: Live) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.keys["reader"], timeout=120)
    reply = client.chat.completions.create(
        model="kag", messages=[{"role": "user", "content": "Which cache does the Atlas gateway use?"}]
    )
    assert reply.choices[0].message.content and (reply.model_extra or {})["kag"]["audit_id"]
    pieces = [
        ch.choices[0].delta.content or ""
        for ch in client.chat.completions.create(
            model="kag", messages=[{"role": "user", "content": "Which cache does the Atlas gateway use?"}], stream=True
        )
    ]
    assert "".join(pieces) == reply.choices[0].message.content


NOTES = 360  # on an idle host 120 were all ingested before the streamed answer had its first token


def test_sigterm_finishes_in_flight_requests_and_running_jobs_resume(tmp_path: Path) -> None:
    corpus = tmp_path / "many"
    corpus.mkdir()
    # enough files that the job is still running when the streamed answer below is under way
    for i in range(NOTES):
        (corpus / f"note-{i:03d}.md").write_text(
            f"# Note {i}\n\nTeam {i} owns service number {i}. " + "The on-call rota changes every week. " * 8
        )
    env = {
        "KAG_CHUNK_SIZE": "64",
        "KAG_CHUNK_OVERLAP": "8",
        "KAG_INDEX_BATCH_SIZE": "8",
        "KAG_LLM_MAX_TOKENS": "48",
        # the drain window must outlast one answer however loaded the machine is
        "KAG_API_SHUTDOWN_TIMEOUT_S": "600",
    }
    server = LiveServer(tmp_path / "data", env=env)
    admin = server.create_key("admin", "admin")
    server.start()
    try:
        seed = upload(server.url, admin, "hr", [corpus / "note-000.md"])
        assert wait_job(server.url, admin, seed["id"])["status"] == "completed"
        job = upload(server.url, admin, "hr", sorted(corpus.iterdir()))
        deadline = time.monotonic() + 120
        while True:  # wait until the job is really running and has written something
            state = httpx.get(f"{server.url}/v1/jobs/{job['id']}", headers=auth(admin)).json()
            if state["status"] == "running" and state["files_done"] >= 10:
                break
            assert state["status"] in ("queued", "running") and time.monotonic() < deadline, state
            time.sleep(0.05)
        # an answer is streaming when SIGTERM arrives: it must still end with its final event
        streamed: dict[str, Any] = {}
        generating = threading.Event()

        def ask() -> None:
            try:
                with httpx.stream(
                    "POST",
                    f"{server.url}/v1/ask",
                    json={"question": "Who owns service number 0?", "stream": True},
                    headers=auth(admin),
                    timeout=120,
                ) as r:
                    text = ""
                    for chunk in r.iter_text():
                        text += chunk
                        if "event: token" in text:
                            generating.set()
                    streamed["events"] = parse_sse(text)
            except Exception as exc:  # shown by the assertion below
                streamed["error"] = repr(exc)
            finally:
                generating.set()

        asker = threading.Thread(target=ask)
        asker.start()
        assert generating.wait(timeout=120)
        server.terminate()  # SIGTERM while the answer is streaming
        asker.join(timeout=120)
        assert server.wait(timeout=120) == 0
        assert "error" not in streamed, streamed.get("error")
        assert streamed["events"][-1][0] == "final"
    finally:
        server.stop()
    status = json.loads(server.kag("jobs", job["id"], "--json"))
    assert status["status"] == "interrupted" and 0 < status["files_done"] < NOTES, status

    with server:  # a restart resumes the job under its id and finishes it without duplicates
        done = wait_job(server.url, admin, job["id"])
        assert done["status"] == "completed" and done["documents_failed"] == 0
        assert done["documents_added"] + done["documents_unchanged"] == NOTES
        docs = httpx.get(f"{server.url}/v1/documents?collection=hr&limit=1000", headers=auth(admin)).json()
        assert docs["total"] == NOTES
    doctor = json.loads(server.kag("doctor", "--json"))
    assert doctor["consistent"] is True
