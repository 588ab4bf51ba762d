"""The FastAPI application factory: routers, error envelope, limits, metrics, tracing and the lifespan."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import kag
from kag.api.errors import ErrorEnvelope, install_error_handlers, internal_error_body
from kag.api.limits import BodyLimitMiddleware, RateLimitHeadersMiddleware, TimeoutMiddleware
from kag.api.metrics import Metrics, MetricsMiddleware
from kag.api.routers import answers, audit, documents, graph, health, keys, models, openai, ui
from kag.api.services import Services
from kag.api.tracing import instrument, tracer_provider_from
from kag.settings import Settings

if TYPE_CHECKING:
    from kag.cli.runtime import Runtime

log = logging.getLogger("kag.api")

UPLOAD_PATH = r"/v1/collections/[^/]+/documents"
#: where the Swagger UI and ReDoc assets of /docs and /redoc are served from
DOCS_ASSETS = "/docs/assets"

DESCRIPTION = """Grounded answers with span-level citations over your documents.

Every request except `/healthz`, `/readyz` and `/metrics` needs an API key:
`Authorization: Bearer kag_…` (or `X-API-Key`). Create one with `kag keys create`.
Every error has the same JSON body: `{"error": {"code", "type", "message", "hint", "status", "request_id", "details"}}`.
"""


class RequestIdMiddleware:
    """Gives each request an id (or keeps a sane incoming `X-Request-ID`) and returns it as a header; an
    unexpected exception becomes a 500 in the error envelope here (logged with the id), not a bare text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        started = False

        async def with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        except Exception as exc:
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
            if started:
                raise
            body = internal_error_body(request_id, exc)
            await with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await with_id({"type": "http.response.body", "body": body})


def create_app(
    settings: Settings | None = None, runtime: Runtime | None = None, *, tracer_provider: Any = None
) -> FastAPI:
    """The kag API. A `runtime` passed in is used as is and left open at shutdown (its owner closes it);
    without one, the app builds its own from `settings` and closes it at shutdown."""
    settings = settings or Settings()
    metrics = Metrics()
    provider = (
        tracer_provider
        if tracer_provider is not None
        else tracer_provider_from(settings.api_otlp_endpoint, settings.api_service_name)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from kag.cli.runtime import Runtime

        rt = runtime if runtime is not None else Runtime(settings)
        svc = Services(settings=settings, runtime=rt, metrics=metrics, tracer_provider=provider)
        app.state.services = svc
        try:
            await run_in_threadpool(svc.start)
        except BaseException:
            await run_in_threadpool(svc.stop, close_runtime=runtime is None)
            raise
        log.info("kag API ready")
        try:
            yield
        finally:
            # uvicorn has let in-flight requests finish; the ingestion job stops at a safe point
            await run_in_threadpool(svc.stop, close_runtime=runtime is None)

    # /docs and /redoc load Swagger UI and ReDoc from the package's own copies (under /docs/assets), never
    # from a CDN: the pages work on a machine without internet
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        title="kag",
        version=kag.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={
            "4XX": {"model": ErrorEnvelope, "description": "Client error, in the error envelope"},
            "5XX": {"model": ErrorEnvelope, "description": "Server error, in the error envelope"},
        },
    )
    app.state.metrics = metrics
    app.state.settings = settings
    install_error_handlers(app)
    for module in (health, keys, documents, answers, models, openai, audit, graph, ui):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(packages=[("kag.api", "static")]), name="ui-static")

    # innermost first: the timeout and body limit see the request before the app, metrics see every answer
    app.add_middleware(TimeoutMiddleware, timeout_s=settings.api_request_timeout_s, exempt=("/metrics", "/healthz"))
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=int(settings.api_max_request_mb * 1e6),
        upload_max_bytes=int(settings.api_max_upload_mb * 1e6),
        upload_path=UPLOAD_PATH,
    )
    if settings.api_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "Location",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
        )
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    if provider is not None:
        instrument(app, provider)
    return app
