"""The one place where errors become HTTP responses, and where their OpenAPI shape is stated.

Body of every error: ``{"error": {"code": "...", "message": "..."}}``. The status comes from
the class of ``server.core.errors.ServiceError`` (``STATUS``), for media failures from their
code (``MEDIA_STATUS``). The same mistake gets the same status whatever form the request came
in (JSON, multipart, query, path): a request that is wrong is 400, content that cannot be used
is 422.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.backends.base import BackendError
from server.core import errors as e

__all__ = [
    "MEDIA_STATUS",
    "STATUS",
    "ErrorBody",
    "error_body",
    "error_responses",
    "http_status",
    "install_error_handlers",
    "install_openapi",
    "validation_message",
]

log = logging.getLogger("pemt.server")

# ServiceError class -> HTTP status (the most specific class in an exception's MRO wins)
STATUS: dict[type[e.ServiceError], int] = {
    e.ServiceError: 400,
    e.InvalidRequest: 400,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.UploadTimeout: 408,
    e.TooLarge: 413,
    e.UnsupportedType: 415,
    e.RangeNotSatisfiable: 416,
    e.MediaRejected: 422,
    e.Unprocessable: 422,
    e.Busy: 429,
    e.NotReady: 503,
    e.StorageFull: 507,
}

# pemt.media's MediaError.code -> HTTP status (MediaRejected)
MEDIA_STATUS: dict[str, int] = {
    "not_media": 415,
    "no_stream": 422,
    "missing_audio": 422,
    "missing_video": 422,
    "empty": 400,
    "corrupt": 422,
    "too_long": 413,
    "too_large": 413,
    "resolution": 422,
    "timeout": 422,
    "too_many_windows": 413,  # server.core.decode: PEMT_MAX_WINDOWS_PER_REQUEST
}

# Request fields whose validation errors carry their own code (everything else:
# ``invalid_request``); the same code whether the field came as JSON, form, query or path.
FIELD_CODES: dict[str, str] = {
    "id": "invalid_id",
    "clip_id": "invalid_id",
    "metadata": "invalid_metadata",
    "filter": "invalid_filter",
    "vector": "invalid_vector",
    "window": "invalid_window",
    "stride": "invalid_stride",
}

BACKEND_RETRY_AFTER_S = 5


def http_status(exc: e.ServiceError) -> int:
    if isinstance(exc, e.MediaRejected):
        return MEDIA_STATUS.get(exc.code, 422)
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 400


def _headers(exc: e.ServiceError) -> dict[str, str]:
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, e.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size}"
    if isinstance(exc, e.UploadTimeout):
        headers["Connection"] = "close"  # the rest of the body is not read
    return headers


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def validation_message(errors: Iterable[Any], skip: tuple[str, ...] = ()) -> tuple[str, str]:
    """(code, message) for pydantic/FastAPI validation errors: one line per error, the code
    from ``FIELD_CODES`` when every error is about the same such field."""
    parts, fields = [], set()
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if str(p) not in skip]
        if loc:
            fields.add(loc[0])
        where = ".".join(loc)
        msg = str(err.get("msg", "invalid value"))
        parts.append(f"{where}: {msg}" if where else msg)
    code = FIELD_CODES.get(next(iter(fields)), "invalid_request") if len(fields) == 1 else None
    return code or "invalid_request", "; ".join(parts) or "invalid request"


def _http_code(status: int) -> str:
    return {
        400: "invalid_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        405: "method_not_allowed",
        413: "too_large",
        415: "unsupported_media_type",
        422: "unprocessable",
        429: "busy",
        503: "not_ready",
    }.get(status, "http_error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.ServiceError)
    async def _service_error(request: Request, exc: e.ServiceError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=http_status(exc), headers=_headers(exc)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        code, msg = validation_message(exc.errors(), skip=("body", "query", "path", "header"))
        return JSONResponse(error_body(code, msg), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(_http_code(exc.status_code), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(BackendError)
    async def _backend(request: Request, exc: BackendError) -> JSONResponse:
        log.error("backend failure on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            error_body("backend_unavailable", f"the model backend failed: {exc}; retry shortly"),
            status_code=503,
            headers={"Retry-After": str(BACKEND_RETRY_AFTER_S)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal", f"internal error ({type(exc).__name__}); see the server log"),
            status_code=500,
        )


# --- OpenAPI ----------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable reason (e.g. invalid_id, busy)")
    message: str = Field(description="what went wrong and what to do")


class ErrorBody(BaseModel):
    error: ErrorDetail


_DESCRIPTIONS = {
    400: "The request is wrong: a field, an id, or the body's shape (code names which)",
    401: "Missing or invalid X-API-Key",
    403: "The request names a server-side path outside PEMT_JOB_ROOTS",
    404: "No such item, clip or job",
    409: "The request contradicts the service's state (e.g. vectors from another model)",
    408: "The body stopped arriving, or came slower than the minimum rate",
    413: "The body or the media is over a limit",
    415: "Not a content type (or a media container) this route takes",
    416: "A Range outside the file",
    422: "A well-formed request whose content cannot be used (e.g. a damaged video)",
    429: "Too many media jobs at once; retry after Retry-After seconds",
    503: "Starting, stopping, or the model backend is down; retry after Retry-After if given",
    507: "The data directory is full; nothing was stored",
}
_RETRY = {429, 503, 507}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the error body schema."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        spec: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        if status in _RETRY:
            spec["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            }
        if status == 416:
            spec["headers"] = {
                "Content-Range": {"description": "bytes */size", "schema": {"type": "string"}}
            }
        out[status] = spec
    return out


def install_openapi(app: FastAPI) -> None:
    """Serve the OpenAPI document without FastAPI's automatic 422 ``HTTPValidationError``
    responses: this service answers validation errors with 400 and the error body, which every
    route documents itself (``error_responses``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    responses = op.get("responses", {})
                    auto = responses.get("422", {})
                    if "HTTPValidationError" in str(auto.get("content", "")):
                        del responses["422"]
            components = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
