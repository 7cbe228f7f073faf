"""Dependencies as ``Annotated`` aliases: the app state, the API key check, validated ids."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader

from server.core.errors import BadRequest, Busy, NotReady, Unauthorized
from server.core.state import AppState
from server.core.uploads import drain

__all__ = [
    "ApiKey",
    "ClipId",
    "State",
    "get_state",
    "job_slot",
    "require_api_key",
    "validate_item_id",
]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="required when the server sets PEMT_API_KEYS"
)


def get_state(request: Request) -> AppState:
    state = getattr(request.state, "pemt", None)
    if state is None or not state.started:
        raise NotReady("the server is starting or stopping; retry shortly")
    return state


State = Annotated[AppState, Depends(get_state)]


def require_api_key(request: Request, key: Annotated[str | None, Depends(_api_key_header)]) -> None:
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    if not key:
        raise Unauthorized("missing API key; send it in the X-API-Key header")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        raise Unauthorized("invalid API key in X-API-Key")


ApiKey = Annotated[None, Depends(require_api_key)]


def validate_item_id(value: str, what: str = "id") -> str:
    from server.index import validate_id

    try:
        return validate_id(value, what)
    except ValueError as e:
        raise BadRequest(str(e), code="invalid_id") from None


def _path_id(
    id: Annotated[str, Path(description="item id (a window: '{clip}#w{i}', URL-encoded)")],
) -> str:
    return validate_item_id(id)


ClipId = Annotated[str, Depends(_path_id)]


@contextlib.asynccontextmanager
async def job_slot(request: Request, state: AppState) -> AsyncIterator[None]:
    """A media-job slot, or 429 + Retry-After (after reading the body, so the client sees it)."""
    try:
        await state.jobs.acquire()
    except Busy:
        await drain(request)
        raise
    try:
        yield
    finally:
        state.jobs.release()
