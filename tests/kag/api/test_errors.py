"""One JSON error envelope for every 4xx/5xx: framework errors, kag errors, limits, overload and timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kag import errors
from kag.api import create_app
from kag.api.errors import STATUS_BY_CODE, status_for
from kag.keys import KeyStore
from tests.kag.api.conftest import Api, api_settings


def envelope(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "type", "message", "hint", "status", "request_id", "details"}
    assert err["code"] == err["type"] == code and err["status"] == status and err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    return err


@contextmanager
def app_with(api: Api, **overrides: Any) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """Another app over the shared runtime, with other limits."""
    settings = api_settings(api.settings.data_dir, **overrides)
    with TestClient(create_app(settings, api.runtime), raise_server_exceptions=False) as client:
        yield client, api.h("admin")


def test_status_of_every_error_class_is_pinned() -> None:
    expected = {
        errors.KagError: 400,
        errors.InvalidRequestError: 400,
        errors.AuthenticationError: 401,
        errors.PermissionDeniedError: 403,
        errors.NotFoundError: 404,
        errors.ConflictError: 409,
        errors.PayloadTooLargeError: 413,
        errors.FileTooLargeError: 413,
        errors.UnsupportedFormatError: 415,
        errors.CorruptDocumentError: 422,
        errors.EmptyDocumentError: 422,
        errors.OcrUnavailableError: 422,
        errors.DecodeError: 422,
        errors.EncryptedDocumentError: 422,
        errors.DocumentError: 422,
        errors.UnreadablePathError: 422,
        errors.RateLimitedError: 429,
        errors.GenerationError: 422,
        errors.ReplayError: 409,
        errors.EvaluationError: 400,
        errors.ConfigurationError: 500,
        errors.MissingDependencyError: 500,
        errors.ModelLoadError: 500,
        errors.ModelInstallError: 500,
        errors.ModelVerificationError: 500,
        errors.StoreError: 503,
        errors.AuditWriteError: 503,
        errors.DataDirLockedError: 503,
        errors.ExecutorError: 503,
        errors.OverloadedError: 503,
        errors.AnswerInterruptedError: 503,
        errors.RequestTimeoutError: 504,
    }
    for cls, status in expected.items():
        exc = cls("x", retry_after=1) if issubclass(cls, errors.RetryableError) else cls("x")
        assert status_for(exc) == status, cls.__name__
    every = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.KagError)}
    assert every - set(expected) == {errors.RetryableError}
    assert all(400 <= s < 600 for s in STATUS_BY_CODE.values())


def test_framework_errors(api: Api) -> None:
    c, h = api.client, api.h("admin")
    err = envelope(c.get("/v1/nothing-here", headers=h), 404, "not_found")
    assert "no route GET /v1/nothing-here" in err["message"]
    envelope(c.put("/v1/search", headers=h), 405, "method_not_allowed")
    err = envelope(c.post("/v1/search", json={"query": ""}, headers=h), 422, "validation_error")
    assert err["details"][0]["loc"] == ["body", "query"]
    envelope(
        c.post("/v1/search", content=b"{not json", headers={**h, "content-type": "application/json"}),
        422,
        "validation_error",
    )
    envelope(c.post("/v1/search", json={"query": "x", "k": 0}, headers=h), 422, "validation_error")
    envelope(c.post("/v1/search", json={"query": "x", "surprise": 1}, headers=h), 422, "validation_error")
    envelope(c.get("/v1/documents?limit=0", headers=h), 422, "validation_error")
    r = c.get("/v1/me", headers={**h, "X-Request-ID": "trace-me-1"})
    assert r.headers["x-request-id"] == "trace-me-1"


def test_kag_errors_of_each_route(api: Api, answered: dict[str, Any]) -> None:
    c, h = api.client, api.h("admin")
    envelope(c.get("/v1/documents/d_missing", headers=h), 404, "not_found")
    envelope(c.get("/v1/jobs/j_missing", headers=h), 404, "not_found")
    envelope(c.get("/v1/audit/a_missing", headers=h), 404, "not_found")
    envelope(c.delete("/v1/keys/k_missing", headers=h), 404, "not_found")
    envelope(c.delete("/v1/collections/none", headers=h), 404, "not_found")
    envelope(c.get("/v1/collections/none", headers=h), 404, "not_found")
    envelope(c.post("/v1/collections", json={"name": "hr"}, headers=h), 409, "conflict")
    envelope(c.post("/v1/collections", json={"name": "bad/name"}, headers=h), 422, "validation_error")
    doc = answered["sources"][0]["document_id"]
    envelope(c.get(f"/v1/documents/{doc}/text?start=50&end=10", headers=h), 400, "invalid_request")
    envelope(c.get("/v1/audit?since=2026-01-01T00:00:00", headers=h), 400, "invalid_request")
    envelope(c.post("/v1/ask", json={"question": "   "}, headers=h), 422, "validation_error")
    envelope(
        c.post(
            "/v1/ask",
            json={"question": "q", "filters": {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}},
            headers=h,
        ),
        400,
        "invalid_request",
    )
    envelope(c.post("/v1/generate", json={"max_tokens": 2}, headers=h), 400, "invalid_request")
    envelope(c.post("/v1/generate", json={"prompt": "x", "max_tokens": 100_000}, headers=h), 400, "invalid_request")
    too_long = "word " * 3000
    err = envelope(
        c.post("/v1/generate", json={"prompt": too_long, "max_tokens": 8}, headers=h), 400, "invalid_request"
    )
    assert "context window" in err["message"]
    envelope(c.post("/v1/embed", json={"texts": ["a"] * 300}, headers=h), 400, "invalid_request")
    envelope(
        c.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "hi"}]}, headers=h),
        400,
        "invalid_request",
    )
    envelope(
        c.post(
            "/v1/keys",
            json={"name": "x", "role": "reader", "collections": ["hr"], "default_collection": "eng"},
            headers=h,
        ),
        400,
        "invalid_request",
    )


def test_unexpected_exception_is_a_500_envelope_without_internals(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = api.client.app.state.services  # type: ignore[attr-defined]

    def broken(mode: str) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(svc, "retriever", broken)
    err = envelope(api.client.post("/v1/search", json={"query": "x"}, headers=api.h("admin")), 500, "internal_error")
    assert "secret internal detail" not in err["message"] and "RuntimeError" in err["message"]


def test_store_failure_is_a_503_envelope(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = api.client.app.state.services  # type: ignore[attr-defined]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise errors.StoreError("cannot read the audit log: database is down", hint="check KAG_DATABASE_URL")

    monkeypatch.setattr(svc.audit, "list", down)
    err = envelope(api.client.get("/v1/audit", headers=api.h("admin")), 503, "store_error")
    assert err["hint"] == "check KAG_DATABASE_URL"


def test_request_body_over_the_limit_is_413_before_reading(api: Api) -> None:
    with app_with(api, api_max_request_mb=0.001) as (c, h):
        big = {"query": "x" * 3000}
        err = envelope(c.post("/v1/search", json=big, headers=h), 413, "payload_too_large")
        assert "KAG_API_MAX_REQUEST_MB" in err["hint"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
            yield b'{"query": "'
            yield b"x" * 3000
            yield b'"}'

        envelope(
            c.post("/v1/search", content=chunks(), headers={**h, "content-type": "application/json"}),
            413,
            "payload_too_large",
        )
        assert c.post("/v1/search", json={"query": "Redis"}, headers=h).status_code == 200


def test_upload_limits_and_types_are_checked_before_any_work(api: Api) -> None:
    ledger = api.runtime.stores.ledger
    jobs_before = len(ledger.jobs(limit=1000))
    with app_with(api, api_max_upload_mb=0.01, max_file_size_mb=0.002) as (c, h):
        url = "/v1/collections/hr/documents"
        err = envelope(
            c.post(url, files=[("files", ("big.txt", b"x" * 20_000, "text/plain"))], headers=h),
            413,
            "payload_too_large",
        )
        assert "upload" in err["message"]
        err = envelope(
            c.post(url, files=[("files", ("mid.txt", b"x" * 5_000, "text/plain"))], headers=h), 413, "file_too_large"
        )
        assert "KAG_MAX_FILE_SIZE_MB" in err["hint"]
        # MB are 10^6 bytes: 0.002 MB is 2,000 bytes, and the message says both
        assert "mid.txt is 0.0 MB (5,000 bytes), over the 0.002 MB limit per file" in err["message"]
        err = envelope(
            c.post(url, files=[("files", ("edge.txt", b"x" * 2_001, "text/plain"))], headers=h), 413, "file_too_large"
        )
        assert "(2,001 bytes), over the 0.002 MB limit" in err["message"]
        err = envelope(
            c.post(url, files=[("files", ("tool.exe", b"MZ", "application/octet-stream"))], headers=h),
            415,
            "unsupported_format",
        )
        assert ".pdf" in err["hint"] and err["details"]["file"] == "tool.exe"
        envelope(
            c.post(
                url,
                files=[("files", ("a.txt", b"a", "text/plain")), ("files", ("a.txt", b"b", "text/plain"))],
                headers=h,
            ),
            400,
            "invalid_request",
        )
        envelope(c.post(url, files=[("files", (".hidden.txt", b"a", "text/plain"))], headers=h), 400, "invalid_request")
        envelope(c.post(url, data={"x": "1"}, headers=h), 422, "validation_error")
        envelope(
            c.post("/v1/collections/bad name/documents", files=[("files", ("a.txt", b"a", "text/plain"))], headers=h),
            400,
            "invalid_request",
        )
    assert len(ledger.jobs(limit=1000)) == jobs_before
    staging = api.settings.data_dir / "uploads" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_rate_limit_is_429_with_retry_after_per_key(api: Api) -> None:
    store = KeyStore(api.runtime.stores.ledger)
    _, unlimited = store.create("unlimited", "reader", ["hr"], rate_limit_per_minute=0)
    with app_with(api, api_rate_limit_per_minute=2, api_rate_limit_burst=2) as (c, h):
        assert [c.get("/v1/me", headers=h).status_code for _ in range(2)] == [200, 200]
        r = c.get("/v1/me", headers=h)
        err = envelope(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 30 and "2 requests per minute" in err["message"]
        # another key has its own bucket, and a key may carry its own limit
        assert c.get("/v1/me", headers=api.h("reader")).status_code == 200
        assert all(
            c.get("/v1/me", headers={"Authorization": f"Bearer {unlimited}"}).status_code == 200 for _ in range(5)
        )
        assert "kag_rate_limited_total 1.0" in c.get("/metrics").text


def test_full_generation_queue_is_503_with_retry_after_and_no_backlog(api: Api) -> None:
    with app_with(api, api_generation_queue_size=0) as (c, h):
        gate = c.app.state.services.gate  # type: ignore[attr-defined]
        slot = c.portal.call(gate.acquire)  # type: ignore[union-attr]
        try:
            for path, body in [
                ("/v1/ask", {"question": "What is PTO?"}),
                ("/v1/ask", {"question": "What is PTO?", "stream": True}),
                ("/v1/generate", {"prompt": "Hi", "max_tokens": 2}),
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "PTO?"}], "stream": True}),
            ]:
                r = c.post(path, json=body, headers=h)
                err = envelope(r, 503, "overloaded")
                assert int(r.headers["retry-after"]) >= 1 and "busy" in err["message"]
            assert gate.waiting == 0
        finally:
            c.portal.call(slot.release)  # type: ignore[union-attr]
        assert c.post("/v1/generate", json={"prompt": "Hi", "max_tokens": 2}, headers=h).status_code == 200
        assert gate.running == 0


def test_waiting_too_long_for_the_model_is_503(api: Api) -> None:
    with app_with(api, api_generation_queue_size=1, api_generation_queue_timeout_s=0.3) as (c, h):
        gate = c.app.state.services.gate  # type: ignore[attr-defined]
        slot = c.portal.call(gate.acquire)  # type: ignore[union-attr]
        try:
            r = c.post("/v1/generate", json={"prompt": "Hi", "max_tokens": 2}, headers=h)
            err = envelope(r, 503, "overloaded")
            assert "waited" in err["message"] and r.headers["retry-after"]
        finally:
            c.portal.call(slot.release)  # type: ignore[union-attr]


def test_no_response_in_time_is_504(api: Api) -> None:
    with app_with(api, api_request_timeout_s=0.3, api_generation_queue_timeout_s=10) as (c, h):
        gate = c.app.state.services.gate  # type: ignore[attr-defined]
        slot = c.portal.call(gate.acquire)  # type: ignore[union-attr]
        try:
            err = envelope(
                c.post("/v1/generate", json={"prompt": "Hi", "max_tokens": 2}, headers=h), 504, "request_timeout"
            )
            assert "KAG_API_REQUEST_TIMEOUT_S" in err["hint"]
            assert gate.waiting == 0  # the cancelled request left the line
        finally:
            c.portal.call(slot.release)  # type: ignore[union-attr]


def test_cors_is_closed_by_default_and_opens_per_setting(api: Api) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = api.client.options("/v1/search", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    with app_with(api, api_cors_origins=["https://app.example"]) as (c, _):
        r = c.options("/v1/search", headers={**preflight, "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.options("/v1/search", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
