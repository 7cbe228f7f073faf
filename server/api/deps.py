"""Dependencies as ``Annotated`` aliases: the app state, the API key check, validated ids."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator

from server.core.errors import NotReady, Unauthorized
from server.core.ids import ID_REGEX, MAX_ID_LENGTH, validate_id
from server.core.state import AppState
from server.core.uploads import Upload, receive_upload

__all__ = [
    "ApiKey",
    "ClipId",
    "State",
    "get_state",
    "job_slot",
    "receive_media",
    "require_api_key",
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


ClipId = Annotated[
    str,
    Path(
        description="an item id, or a clip id for the whole clip (a window: '{clip}#w{i}', "
        "URL-encoded as %23)",
        json_schema_extra={"pattern": ID_REGEX, "maxLength": MAX_ID_LENGTH},
    ),
    AfterValidator(validate_id),
]


@contextlib.asynccontextmanager
async def job_slot(state: AppState) -> AsyncIterator[None]:
    """A media-job slot, or ``Busy`` (429 + Retry-After). Take it only after the request body
    has been read: a slow client must not hold a slot while it sends."""
    await state.jobs.acquire()
    try:
        yield
    finally:
        state.jobs.release()


def receive_media(
    request: Request, state: AppState
) -> contextlib.AbstractAsyncContextManager[Upload]:
    """The request's multipart body under this server's limits (size, read time and rate, free
    disk), spooled to ``data_dir/uploads`` and deleted on exit: every upload route reads it so."""
    s = state.settings
    return receive_upload(
        request,
        s.data_dir / "uploads",
        s.max_upload_bytes,
        state.read_limits,
        min_free=s.min_free_bytes,
    )
