"""The published OpenAPI schema describes the Server-Sent Events of `/v1/ask` truthfully: schemathesis's
own SSE reading of a real streamed answer conforms to it, event by event."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import httpx
import pytest

from tests.kag.api.conftest import Api

QUESTION = "How many days of PTO do employees accrue per month?"


def conformance_checks() -> list[Any]:
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [status_code_conformance, content_type_conformance, response_schema_conformance]


def validate(spec: dict[str, Any], path: str, body: dict[str, Any], response: httpx.Response) -> None:
    import schemathesis

    case = schemathesis.openapi.from_dict(spec)[path]["POST"].Case(body=body, media_type="application/json")
    case.validate_response(response, checks=conformance_checks())


@pytest.fixture(scope="module")
def spec(api: Api) -> dict[str, Any]:
    return dict(api.client.get("/openapi.json").json())


@pytest.fixture(scope="module")
def streamed(api: Api) -> httpx.Response:
    r = api.client.post("/v1/ask", json={"question": QUESTION, "stream": True}, headers=api.h("reader"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "event: token" in r.text and "event: final" in r.text
    return r


def test_a_streamed_answer_conforms_to_the_published_event_schema(
    api: Api, spec: dict[str, Any], streamed: httpx.Response
) -> None:
    validate(spec, "/v1/ask", {"question": QUESTION, "stream": True}, streamed)
    # the JSON answer of the same route conforms too
    plain = api.client.post("/v1/ask", json={"question": QUESTION}, headers=api.h("reader"))
    validate(spec, "/v1/ask", {"question": QUESTION}, plain)


def test_the_event_schema_is_checked_for_real(spec: dict[str, Any], streamed: httpx.Response) -> None:
    """The check reads the events: the old description (`{"type": "string"}`) and an unknown event fail."""
    from schemathesis.core.failures import FailureGroup

    old = copy.deepcopy(spec)
    old["paths"]["/v1/ask"]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"] = {"type": "string"}
    with pytest.raises(FailureGroup):
        validate(old, "/v1/ask", {"question": QUESTION, "stream": True}, streamed)
    bogus = httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=b'event: progress\ndata: {"percent": 50}\n\n',
        request=streamed.request,
    )
    bogus.elapsed = datetime.timedelta(0)
    with pytest.raises(FailureGroup):
        validate(spec, "/v1/ask", {"question": QUESTION, "stream": True}, bogus)


def test_streams_of_generate_and_chat_are_documented(api: Api, spec: dict[str, Any]) -> None:
    body = {"prompt": "Say hi", "max_tokens": 3, "stream": True}
    validate(spec, "/v1/generate", body, api.client.post("/v1/generate", json=body, headers=api.h("reader")))
    chat = {"messages": [{"role": "user", "content": QUESTION}], "stream": True}
    r = api.client.post("/v1/chat/completions", json=chat, headers=api.h("reader"))
    assert r.text.rstrip().endswith("data: [DONE]")
    validate(spec, "/v1/chat/completions", chat, r)
