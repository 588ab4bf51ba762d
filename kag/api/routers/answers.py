"""Retrieval (`/v1/search`) and verified, cited, audited answers (`/v1/ask`, JSON or Server-Sent Events)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from kag.api.auth import Action, require, scoped_collections, services
from kag.api.errors import status_for
from kag.api.schemas import AskRequest, AskResponse, Filters, SearchRequest, SearchResponse
from kag.api.services import Services
from kag.api.streaming import ThreadStream, json_data, sse, sse_content
from kag.api.tracing import record_stages
from kag.errors import InvalidRequestError, KagError
from kag.keys import ApiKey

if TYPE_CHECKING:
    from pipelines.answer import AnswerResult, MetadataFilter

router = APIRouter(prefix="/v1", tags=["answers"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _metadata_filter(filters: Filters | None) -> MetadataFilter | None:
    from pipelines.answer import MetadataFilter

    if filters is None:
        return None
    if filters.since and filters.until and filters.since > filters.until:
        raise InvalidRequestError("filters.since is after filters.until")
    return MetadataFilter(
        document_ids=tuple(filters.document_ids) if filters.document_ids is not None else None,
        source_prefix=filters.source_prefix,
        since=filters.since,
        until=filters.until,
    )


@router.post("/search", summary="Retrieve ranked chunks with scores and provenance (no generation)")
def search(
    body: SearchRequest, request: Request, key: Annotated[ApiKey, Depends(require(Action.SEARCH))]
) -> SearchResponse:
    from pipelines.retrieve import hydrate

    svc = services(request)
    started = time.perf_counter()
    ledger = svc.runtime.stores.ledger
    collections = scoped_collections(key, body.collections, svc.known_collections())
    flt = _metadata_filter(body.filters)
    document_ids = None
    if flt is not None and not flt.empty:
        document_ids = ledger.document_ids_matching(
            collections,
            document_ids=list(flt.document_ids) if flt.document_ids is not None else None,
            source_prefix=flt.source_prefix,
            since=flt.since,
            until=flt.until,
        )
    # the key's collections go into the store query itself: nothing outside them is ever ranked
    hits = svc.retriever(body.mode.value).retrieve(body.query, body.k, collections, document_ids)
    absolute = svc.settings.source_uri == "absolute"
    results = [h.to_dict() for h in hydrate(ledger, hits, absolute_sources=absolute)]
    return SearchResponse(
        query=body.query,
        mode=body.mode,
        collections=collections,
        results=results,  # type: ignore[arg-type]
        took_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def wants_stream(request: Request, flag: bool) -> bool:
    return flag or "text/event-stream" in request.headers.get("accept", "")


async def answer_events(
    svc: Services,
    key: ApiKey,
    question: str,
    collections: list[str],
    policy: str | None,
    flt: Any,
    endpoint: str,
    *,
    history: list[tuple[str, str]] | None = None,
    deadline: float | None = None,
    whole: bool = True,
) -> AsyncIterator[tuple[str, Any]]:
    """The pipeline's ("token", str) and ("final", AnswerResult) events, on a slot of the generation queue.

    The slot is taken before the first event (so a full queue, or one too slow for `deadline`, is a 503,
    never a hung stream or a 504) and given back only when the pipeline thread has ended, even if the
    client went away first. Past the drain window of a shutdown the pipeline stops and audits the answer.
    """
    slot = await svc.gate.acquire(deadline, whole=whole)
    pipeline = svc.runtime.answer_pipeline

    def run() -> Any:
        return pipeline.stream(
            question,
            collections,
            principal=key.id,
            policy=policy,
            filters=flt,
            history=history or (),
            cancel=svc.interrupt,
        )

    tokens = svc.metrics.tokens.labels(endpoint=endpoint)
    stream = ThreadStream(run, on_done=slot.release, name="kag-answer")
    try:
        async for kind, value in stream:
            if kind == "token":
                tokens.inc()
            elif kind == "final":
                svc.metrics.observe_stages(value.timings)
                record_stages(svc.tracer_provider, value.timings, {"kag.audit_id": value.audit_id})
            yield kind, value
    finally:
        stream.close()


def _prepare(svc: Services, key: ApiKey, body: AskRequest) -> tuple[list[str], Any]:
    collections = scoped_collections(key, body.collections, svc.known_collections())
    return collections, _metadata_filter(body.filters)


@router.post(
    "/ask",
    summary="A verified answer with span-level citations; JSON, or Server-Sent Events when streaming",
    response_model=AskResponse,
    responses={
        200: {
            "content": sse_content(
                {
                    "token": json_data(type="object", required=["text"], properties={"text": {"type": "string"}}),
                    "final": json_data("AskResponse"),
                    "error": json_data("ErrorEnvelope"),
                },
                example='event: token\ndata: {"text":"According"}\n\nevent: final\ndata: {"answer": ...}\n\n',
            ),
            "description": "JSON answer, or with `stream: true` / `Accept: text/event-stream`: `token` events "
            '(`{"text": ...}`, the model\'s raw output) then one `final` event (the verified answer, as the JSON '
            "response) or one `error` event (the error envelope).",
        },
        503: {"description": "The generation queue is full (Retry-After says when to retry)"},
    },
)
async def ask(body: AskRequest, request: Request, key: Annotated[ApiKey, Depends(require(Action.ASK))]) -> Any:
    svc = services(request)
    collections, flt = await run_in_threadpool(_prepare, svc, key, body)
    policy = body.policy.value if body.policy else None
    streamed = wants_stream(request, body.stream)
    deadline = getattr(request.state, "deadline", None)
    events = answer_events(
        svc, key, body.question, collections, policy, flt, "ask", deadline=deadline, whole=not streamed
    )
    if not streamed:
        result: AnswerResult | None = None
        async for kind, value in events:
            if kind == "final":
                result = value
        assert result is not None
        return result.to_dict()
    # take the queue slot now: a full queue answers 503 before the stream starts
    first = await anext(events)
    return StreamingResponse(_sse_answer(first, events), media_type="text/event-stream", headers=SSE_HEADERS)


def error_event(exc: BaseException) -> bytes:
    body: dict[str, Any]
    if isinstance(exc, KagError):
        body = {"code": exc.code, "type": exc.code, "message": exc.message, "hint": exc.hint, "status": status_for(exc)}
        details = {k: v for k, v in exc.context.items() if isinstance(v, str | int | float | bool)}
        if details:  # e.g. the audit id of an interrupted answer
            body["details"] = details
    else:
        body = {"code": "internal_error", "type": "internal_error", "message": "internal error", "status": 500}
    return sse("error", {"error": body})


async def _sse_answer(first: tuple[str, Any], events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[bytes]:
    async def all_events() -> AsyncIterator[tuple[str, Any]]:
        yield first
        async for event in events:
            yield event

    try:
        async for kind, value in all_events():
            if kind == "token":
                yield sse("token", {"text": value})
            elif kind == "final":
                yield sse("final", value.to_dict())
    except Exception as exc:  # the stream has started: the error goes in-band
        yield error_event(exc)
