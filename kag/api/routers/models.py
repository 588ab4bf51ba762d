"""Raw model access: embeddings (micro-batched across concurrent requests) and local-LLM completion.

About batching for `/v1/generate`: one llama.cpp context decodes one sequence at a time, so
concurrent completions are not fused into one forward pass. They wait in the bounded generation
queue and are served in arrival order, one after another (KAG_API_GENERATION_CONCURRENCY = 1); a full
queue answers 503 with Retry-After at once. Embeddings, by contrast, really are batched: concurrent
`/v1/embed` calls are joined into one sentence-transformers forward pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from kag.api.auth import Action, require, services
from kag.api.routers.answers import SSE_HEADERS, error_event, wants_stream
from kag.api.schemas import EmbedRequest, EmbedResponse, GenerateRequest, GenerateResponse, OpenAIEmbeddingRequest
from kag.api.services import Services
from kag.api.streaming import ThreadStream, json_data, sse, sse_content
from kag.errors import InvalidRequestError
from kag.keys import ApiKey

router = APIRouter(prefix="/v1", tags=["models"])


async def _embed(svc: Services, texts: list[str]) -> Any:
    limit = svc.settings.api_embed_max_texts
    if len(texts) > limit:
        raise InvalidRequestError(
            f"{len(texts)} texts in one request, over the limit of {limit}",
            hint="split it, or raise KAG_API_EMBED_MAX_TEXTS",
        )
    return await asyncio.wrap_future(svc.batcher.submit(texts))


@router.post("/embed", summary="Embed texts (L2-normalized; concurrent requests are batched together)")
async def embed(
    body: EmbedRequest, request: Request, _: Annotated[ApiKey, Depends(require(Action.MODELS))]
) -> EmbedResponse:
    svc = services(request)
    vectors = await _embed(svc, body.texts)
    return EmbedResponse(model=svc.runtime.embedder.name, dim=int(vectors.shape[1]), embeddings=vectors.tolist())


@router.post("/embeddings", summary="OpenAI-compatible embeddings")
async def openai_embeddings(
    body: OpenAIEmbeddingRequest, request: Request, _: Annotated[ApiKey, Depends(require(Action.MODELS))]
) -> dict[str, Any]:
    svc = services(request)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise InvalidRequestError("input is empty")
    vectors = await _embed(svc, texts)
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "model": body.model,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/models", summary="OpenAI-compatible model list")
def list_models(request: Request, _: Annotated[ApiKey, Depends(require(Action.MODELS))]) -> dict[str, Any]:
    svc = services(request)
    return {
        "object": "list",
        "data": [
            {"id": "kag", "object": "model", "created": 0, "owned_by": "kag"},
            {"id": svc.runtime.embedder.name, "object": "model", "created": 0, "owned_by": "kag"},
        ],
    }


@router.post(
    "/generate",
    summary="Raw local-LLM completion (top-k/top-p sampling); served in order from the bounded generation queue",
    response_model=GenerateResponse,
    responses={
        200: {
            "content": sse_content(
                {
                    "token": json_data(type="object", required=["text"], properties={"text": {"type": "string"}}),
                    "final": json_data("GenerateResponse"),
                    "error": json_data("ErrorEnvelope"),
                },
                example='event: token\ndata: {"text":"Hello"}\n\nevent: final\ndata: {"text": "Hello", ...}\n\n',
            ),
            "description": "JSON, or with `stream: true` / `Accept: text/event-stream`: `token` events, then one "
            "`final` event (the JSON response) or one `error` event (the error envelope).",
        },
        503: {"description": "The generation queue is full (Retry-After says when to retry)"},
    },
)
async def generate(
    body: GenerateRequest, request: Request, _: Annotated[ApiKey, Depends(require(Action.MODELS))]
) -> Any:
    svc = services(request)
    generator = svc.runtime.generator
    if (body.prompt is None) == (body.messages is None):
        raise InvalidRequestError("give exactly one of prompt or messages")
    cap = svc.settings.api_generate_max_tokens
    if body.max_tokens > cap:
        raise InvalidRequestError(
            f"max_tokens {body.max_tokens} is over the limit of {cap}", hint="raise KAG_API_GENERATE_MAX_TOKENS"
        )
    if body.messages is not None:
        prompt = generator.render_chat([{"role": m.role, "content": m.text()} for m in body.messages])
    else:
        prompt = body.prompt or ""
    if not prompt:
        raise InvalidRequestError("the prompt is empty")
    sampling = generator.sampling.replace(
        max_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, seed=body.seed
    )
    prompt_tokens = generator.count_tokens(prompt)
    if prompt_tokens + body.max_tokens > generator.n_ctx:
        raise InvalidRequestError(
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({body.max_tokens}) exceed the context window "
            f"of {generator.n_ctx} tokens",
            hint="shorten the prompt, lower max_tokens, or raise KAG_LLM_N_CTX",
        )
    slot = await svc.gate.acquire()
    started = time.perf_counter()
    tokens = svc.metrics.tokens.labels(endpoint="generate")
    pieces = ThreadStream(lambda: generator.stream(prompt, sampling=sampling), on_done=slot.release, name="kag-gen")
    model = {"path": generator.model_path, "sha256": generator.model_sha256}

    def final(text: str, count: int) -> dict[str, Any]:
        return {
            "text": text,
            "finish_reason": "length" if count >= body.max_tokens else "stop",
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": count,
                "total_tokens": prompt_tokens + count,
            },
            "model": model,
            "sampling": sampling.to_dict(),
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    if not wants_stream(request, body.stream):
        out: list[str] = []
        async for piece in pieces:
            out.append(piece)
            tokens.inc()
        return final("".join(out), len(out))

    async def events() -> AsyncIterator[bytes]:
        out: list[str] = []
        try:
            async for piece in pieces:
                out.append(piece)
                tokens.inc()
                yield sse("token", {"text": piece})
            yield sse("final", final("".join(out), len(out)))
        except Exception as exc:
            yield error_event(exc)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _encoded(vector: Any, encoding: str) -> Any:
    """A vector as a float list, or as OpenAI's base64 of little-endian float32 (what its client asks for)."""
    if encoding == "base64":
        import base64

        import numpy as np

        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
