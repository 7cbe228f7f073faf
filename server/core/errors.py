"""Every error the service answers with, and the one place that maps them to HTTP.

Body: ``{"error": {"code": "...", "message": "..."}}``. Bad input is always a 4xx with a reason.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.backends.base import BackendError

__all__ = [
    "MEDIA_STATUS",
    "ApiError",
    "BadRequest",
    "Busy",
    "MediaRejected",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_body",
    "install_error_handlers",
]

log = logging.getLogger("pemt.server")

# pemt.media's MediaError.code -> HTTP status
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


class ApiError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class NotFound(ApiError):
    status, code = 404, "not_found"


class PayloadTooLarge(ApiError):
    status, code = 413, "too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Busy(ApiError):
    status, code = 429, "busy"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(ApiError):
    status, code = 503, "not_ready"


class MediaRejected(ApiError):
    """A decode failure of the upload, carrying pemt.media's stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code, status=MEDIA_STATUS.get(code, 422))


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _http_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        415: "unsupported_media_type",
        422: "invalid_request",
        429: "busy",
        503: "not_ready",
    }.get(status, "http_error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        msg = "; ".join(parts) or "invalid request"
        return JSONResponse(error_body("invalid_request", msg), status_code=422)

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
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal", f"internal error ({type(exc).__name__}); see the server log"),
            status_code=500,
        )
