"""The one JSON error envelope of the HTTP API, and the HTTP status of every kag error code.

Every 4xx and 5xx answer has this body (OpenAI clients read `error.message` and `error.type`)::

    {"error": {"code": "not_found", "type": "not_found", "message": "...", "hint": "...",
               "status": 404, "request_id": "...", "details": {...}}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from kag.errors import KagError, RetryableError

log = logging.getLogger("kag.api")

#: HTTP status of each error code; codes not listed fall back on their class (see `status_for`)
STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "kag_error": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "not_acceptable": 406,
    "conflict": 409,
    "payload_too_large": 413,
    "file_too_large": 413,
    "unsupported_format": 415,
    "validation_error": 422,
    "document_error": 422,
    "generation_error": 422,
    "replay_error": 409,
    "evaluation_error": 400,
    "rate_limited": 429,
    "internal_error": 500,
    "configuration_error": 500,
    "missing_dependency": 500,
    "model_load_error": 500,
    "store_error": 503,
    "audit_write_failed": 503,
    "data_dir_locked": 503,
    "executor_error": 503,
    "overloaded": 503,
    "answer_interrupted": 503,
    "not_ready": 503,
    "request_timeout": 504,
}

#: the code of a plain HTTP status raised by Starlette/FastAPI themselves (404 route, 405 method, ...)
CODE_BY_STATUS: dict[int, str] = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_format",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "overloaded",
    504: "request_timeout",
}


class ErrorBody(BaseModel):
    code: str
    type: str
    message: str
    hint: str | None = None
    status: int
    request_id: str | None = None
    details: dict[str, Any] | list[Any] | None = None


class ErrorEnvelope(BaseModel):
    """Every error answer of the API."""

    error: ErrorBody


def status_for(exc: KagError) -> int:
    """The HTTP status of a kag error: its code's, else its nearest listed base class's."""
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if code in STATUS_BY_CODE:
            return STATUS_BY_CODE[code]
    return 500


def error_response(
    request: Request | None,
    status: int,
    code: str,
    message: str,
    *,
    hint: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    body = ErrorEnvelope(
        error=ErrorBody(
            code=code, type=code, message=message, hint=hint, status=status, request_id=request_id, details=details
        )
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def kag_error_response(request: Request | None, exc: KagError) -> JSONResponse:
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, RetryableError):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="kag"'
    details = {k: v for k, v in exc.context.items() if isinstance(v, str | int | float | bool | list)} or None
    if status >= 500:
        log.warning("request failed", extra={"code": exc.code, "error": exc.message})
    return error_response(request, status, exc.code, exc.message, hint=exc.hint, details=details, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error, ours or the framework's, into the envelope."""

    @app.exception_handler(KagError)
    async def _kag(request: Request, exc: KagError) -> JSONResponse:
        return kag_error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = CODE_BY_STATUS.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
            hint: str | None = "see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            hint = "see /docs for the methods of this route"
        elif exc.status_code == 413:
            hint = getattr(exc, "hint", None) or "send less, or raise the setting named in the message"
        else:
            hint = None
        return error_response(request, exc.status_code, code, message, hint=hint, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            errors.append(
                {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
            )
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"])
        return error_response(
            request,
            422,
            "validation_error",
            f"invalid request: {where}: {first['msg']}" if where else f"invalid request: {first['msg']}",
            hint="see /docs for the request schema",
            details=errors,
        )


def internal_error_body(request_id: str | None, exc: BaseException) -> bytes:
    """The envelope of an unexpected exception: its class, never its message (which may hold internals)."""
    import json

    body = {
        "error": {
            "code": "internal_error",
            "type": "internal_error",
            "message": f"internal error ({exc.__class__.__name__})",
            "hint": "the server log has the details under this request_id",
            "status": 500,
            "request_id": request_id,
            "details": None,
        }
    }
    return json.dumps(body).encode()
