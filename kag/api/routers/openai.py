"""`POST /v1/chat/completions`, OpenAI-compatible: existing OpenAI clients get verified, cited answers.

The last user message is the question; a follow-up is first rewritten into a standalone question from
the earlier user and assistant turns (`pipelines.conversation`, recorded in the audit record). It is
answered from the collection named by the request's `collection` / `collections` field, else the key's
default collection, else every collection the key may use. The reply's `content` is the *verified*
answer (after the verify stage's policy), with the citations in a top-level `citations` list and the
verdicts under `kag`.

When streaming, the first chunk carries the assistant role at once and SSE comments keep the connection
alive while the model writes; the verified answer follows sentence by sentence once verification is
done, because the raw model output may not survive verification. (`/v1/ask` with `stream: true` streams
the raw tokens as they come, then the verified answer.) Sampling fields of the request (temperature,
max_tokens, ...) are accepted and ignored: answers use the server's settings, which the audit record
names."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from kag.api.auth import Action, require, scoped_collections, services
from kag.api.routers.answers import SSE_HEADERS, answer_events, error_event
from kag.api.schemas import ChatCompletionRequest
from kag.api.streaming import json_data, sse_content
from kag.errors import InvalidRequestError
from kag.keys import ApiKey

router = APIRouter(prefix="/v1", tags=["openai"])

KEEPALIVE_EVERY_S = 2.0


def _question(body: ChatCompletionRequest) -> str:
    users = [m for m in body.messages if m.role == "user"]
    if not users or body.messages[-1].role != "user":
        raise InvalidRequestError("the last message must come from the user", hint="end messages with a user turn")
    question = users[-1].text().strip()
    if not question:
        raise InvalidRequestError("the last user message is empty")
    if len(question) > 4000:
        raise InvalidRequestError("the last user message is over 4000 characters")
    return question


def _history(body: ChatCompletionRequest) -> list[tuple[str, str]]:
    """The turns before the last user message: a follow-up is rewritten from them (system turns left out)."""
    return [(m.role, m.text()) for m in body.messages[:-1] if m.role in ("user", "assistant") and m.text().strip()]


def _kag(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    return {
        "audit_id": result.audit_id,
        "collections": d["collections"],
        "abstained": d["abstained"],
        "question": d["question"],
        "asked": d["asked"],
        "short_answer": d["short_answer"],
        "reason": d["reason"],
        "policy": d["policy"],
        "sentences": d["sentences"],
        "sources": d["sources"],
    }


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion, answered from the knowledge base with citations",
    responses={
        200: {
            "content": sse_content(
                {
                    # `chat.completion.chunk` objects, then the text `[DONE]`, as OpenAI streams them
                    "message": {"description": "a `chat.completion.chunk` as JSON, or `[DONE]` at the end"},
                    "error": json_data("ErrorEnvelope"),
                },
                example='data: {"object":"chat.completion.chunk", ...}\n\ndata: [DONE]\n\n',
            ),
            "description": "A `chat.completion` object, or with `stream: true` OpenAI's stream of "
            "`chat.completion.chunk` events ending in `[DONE]` (an `error` event on failure).",
        },
        503: {"description": "The generation queue is full (Retry-After says when to retry)"},
    },
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, key: Annotated[ApiKey, Depends(require(Action.ASK))]
) -> Any:
    svc = services(request)
    question = _question(body)
    requested = body.collections or ([body.collection] if body.collection else None)
    collections = await run_in_threadpool(scoped_collections, key, requested, svc.known_collections())
    policy = body.policy.value if body.policy else None
    deadline = getattr(request.state, "deadline", None)
    events = answer_events(
        svc,
        key,
        question,
        collections,
        policy,
        None,
        "chat",
        history=_history(body),
        deadline=deadline,
        whole=not body.stream,
    )
    created = int(time.time())
    generator = svc.runtime.generator
    if not body.stream:
        result: Any = None
        generated = 0
        async for kind, value in events:
            if kind == "token":
                generated += 1
            else:
                result = value
        prompt_tokens = await run_in_threadpool(generator.count_tokens, result.prompt)
        return {
            "id": f"chatcmpl-{result.audit_id}",
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.answer},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": generated,
                "total_tokens": prompt_tokens + generated,
            },
            "citations": [c.to_dict() for c in result.verification.citations],
            "kag": _kag(result),
        }
    first = await anext(events)  # a full queue is a 503 here, before the stream starts
    stream_id = f"chatcmpl-{uuid.uuid4().hex}"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": stream_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }

    async def stream() -> AsyncIterator[bytes]:
        from kag.api.streaming import sse

        yield sse(None, chunk({"role": "assistant", "content": ""}))
        last = time.monotonic()
        result: Any = None

        async def all_events() -> AsyncIterator[tuple[str, Any]]:
            yield first
            async for event in events:
                yield event

        try:
            async for kind, value in all_events():
                if kind == "final":
                    result = value
                elif time.monotonic() - last > KEEPALIVE_EVERY_S:
                    last = time.monotonic()
                    yield b": generating\n\n"
        except Exception as exc:
            yield error_event(exc)
            return
        for sentence in _pieces(result):
            yield sse(None, chunk({"content": sentence}))
        yield sse(
            None,
            chunk(
                {},
                "stop",
                citations=[c.to_dict() for c in result.verification.citations],
                kag=_kag(result),
            ),
        )
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


def _pieces(result: Any) -> list[str]:
    """The verified answer cut at its sentences (the cuts join back to exactly the answer)."""
    answer: str = result.answer
    pieces, start = [], 0
    for sentence in result.verification.sentences:
        at = answer.find(sentence.text, start) if sentence.text else -1
        if at < 0:
            continue
        end = at + len(sentence.text)
        pieces.append(answer[start:end])
        start = end
    if start < len(answer):
        pieces.append(answer[start:])
    return [p for p in pieces if p]
