"""Liveness, readiness and Prometheus metrics: the only routes without an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from kag.api.errors import error_response

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Stores open and models loaded", responses={503: {"description": "Not ready yet"}})
def readyz(request: Request) -> Response:
    svc = getattr(request.app.state, "services", None)
    if svc is None or not svc.ready:
        return error_response(
            request,
            503,
            "not_ready",
            "the service is starting or stopping",
            hint="retry in a few seconds",
            headers={"Retry-After": "2"},
        )
    from fastapi.responses import JSONResponse

    rt = svc.runtime
    return JSONResponse(
        {
            "status": "ready",
            "collections": len(svc.known_collections()),
            "embedding_model": rt.embedder.name,
            # `onnx` unless the export failed its check and short texts fell back to torch
            "embedding_runtime": rt.embedder.runtime_used,
            "llm": rt.generator.model_path.rsplit("/", 1)[-1],
            "generation": {"running": svc.gate.running, "waiting": svc.gate.waiting},
            "ingest_queue": svc.worker.depth,
        }
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
