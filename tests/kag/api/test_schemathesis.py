"""Schemathesis against the OpenAPI schema of a real server: generated requests, valid and invalid, never
get a 5xx, and every answer conforms to the published schema (status, content type, body; a Server-Sent
Events stream event by event), bounded: a fixed number of examples per operation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kag.api.live import LiveServer

pytestmark = pytest.mark.slow

EXAMPLES = 12


def test_generated_requests_never_get_a_server_error(tmp_path: Path) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    env = {
        "KAG_LLM_MAX_TOKENS": "8",
        "KAG_API_GENERATE_MAX_TOKENS": "8",
        "KAG_API_RATE_LIMIT_PER_MINUTE": "0",
        "KAG_CHUNK_SIZE": "64",
        "KAG_CHUNK_OVERLAP": "8",
    }
    server = LiveServer(tmp_path / "data", env=env)
    key = server.create_key("fuzzer", "admin")
    from tests.kag.api.test_openapi_stream import conformance_checks

    checks = conformance_checks()
    failures: list[str] = []
    statuses: list[int] = []
    streamed: list[str] = []
    with server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        for operation in operations:
            strategy = st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
            )

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
                statuses.append(response.status_code)
                if "event-stream" in str(response.headers.get("content-type")):
                    streamed.append(f"{case.method} {case.path}")
                try:
                    case.validate_response(response, checks=checks)
                except Exception as exc:  # a schemathesis FailureGroup: what the schema does not describe
                    failures.append(f"{case.method} {case.formatted_path}: {exc}")
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}")
                else:
                    content_type = response.headers.get("content-type") or [""]
                    if isinstance(content_type, list):
                        content_type = content_type[0]
                    body = response.json() if "json" in content_type else None
                    if response.status_code >= 400:
                        assert isinstance(body, dict) and set(body) == {"error"}, (case.method, case.path, body)

            check()
        # a streamed answer, whatever the generated cases held
        ask = schema["/v1/ask"]["POST"]
        case = ask.Case(body={"question": "What is PTO?", "stream": True}, media_type="application/json")
        response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        assert "event: final" in response.text
        streamed.append("POST /v1/ask")
        case.validate_response(response, checks=checks)
    assert failures == []
    assert "POST /v1/ask" in streamed
    # the run really exercised the API: many requests, both accepted and refused ones
    assert len(statuses) >= 5 * len(operations) and any(s < 300 for s in statuses) and any(s >= 400 for s in statuses)
