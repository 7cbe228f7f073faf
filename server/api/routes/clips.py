"""Stored items: GET/DELETE /clips/{id}, GET /clips (paged), GET /clips/{id}/thumbnail,
GET /clips/{id}/media (the kept source video, with HTTP ranges)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import AfterValidator
from starlette import responses as starlette_responses

from server.api import convert, schemas
from server.api.deps import ClipId, State, require_api_key
from server.api.errors import error_responses
from server.core.errors import InvalidRequest, NotFound, RangeNotSatisfiable
from server.core.ids import (
    CLIP_ID_REGEX,
    ID_REGEX,
    MAX_ID_LENGTH,
    validate_clip_id,
    validate_id,
)
from server.core.media import CONTENT_TYPES
from server.core.pipeline import clip_item_ids, clip_of, clip_summary

MAX_LIST = 1000  # items per page

router = APIRouter(prefix="/clips", tags=["clips"], dependencies=[Depends(require_api_key)])


@router.get(
    "",
    operation_id="list_clips",
    response_model=schemas.ClipPage,
    responses=error_responses(400, 401, 503),
    summary="List stored items by id (walk all of them with after= and next)",
)
async def list_clips(
    state: State,
    offset: Annotated[
        int,
        Query(
            ge=0,
            le=schemas.MAX_OFFSET,
            description="skip this many items: for small jumps (costs grow with the offset)",
        ),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    clip_id: Annotated[
        str | None,
        Query(
            description="only this clip's windows",
            json_schema_extra={"pattern": CLIP_ID_REGEX, "maxLength": MAX_ID_LENGTH},
        ),
        AfterValidator(lambda v: v if v is None else validate_clip_id(v, "clip_id")),
    ] = None,
    after: Annotated[
        str | None,
        Query(
            description="a cursor: only ids after this one (the previous page's next); the way "
            "to walk a whole index, equally fast at any depth. Not with offset",
            json_schema_extra={"pattern": ID_REGEX, "maxLength": MAX_ID_LENGTH},
        ),
        AfterValidator(lambda v: v if v is None else validate_id(v, "after")),
    ] = None,
) -> schemas.ClipPage:
    """Items in id order (byte order). Walk everything with ``after``: start without it, then
    pass each page's ``next`` until it is null; items written or deleted after the cursor
    during the walk show or vanish, nothing before it comes again."""
    if after is not None and offset:
        raise InvalidRequest(
            f"pass either after (a cursor: the previous page's next) or offset, not both "
            f"(got after={after!r}, offset={offset})"
        )

    def _page() -> tuple[list[Any], int]:
        items = state.index.list(offset, limit + 1, clip_id=clip_id, after=after)
        return items, state.index.count(clip_id)

    items, total = await state.run_index(_page)
    more = len(items) > limit
    items = items[:limit]
    return schemas.ClipPage(
        items=[convert.clip(i) for i in items],
        total=total,
        offset=offset,
        limit=limit,
        next=items[-1].id if more else None,
    )


@router.get(
    "/{id}",
    operation_id="get_clip",
    response_model=schemas.Clip,
    responses=error_responses(400, 401, 404, 503),
    summary="One stored item, or a whole clip by its clip id (vectors on request)",
)
async def get_clip(
    id: ClipId,
    state: State,
    vectors: Annotated[bool, Query(description="include the stored vectors")] = False,
) -> schemas.Clip:
    """An item id gives that item. A clip id of several windows gives the clip: its time
    span, the union of its modalities, its metadata without ``window``, ``windows`` (the
    items' ids), and as vectors the normalized mean of its windows' vectors."""

    def _find() -> tuple[Any, list[str] | None] | None:
        item = state.index.get(id, with_vectors=vectors)
        if item is not None:
            return item, None
        return clip_summary(state.index, id, with_vectors=vectors)

    found = await state.run_index(_find)
    if found is None:
        raise NotFound(f"no item or clip with id {id!r}; list ids with GET /clips")
    return convert.clip(found[0], windows=found[1])


@router.delete(
    "/{id}",
    operation_id="delete_clip",
    response_model=schemas.Deleted,
    responses=error_responses(400, 401, 404, 503, 507),
    summary="Delete an item; a clip id deletes all its windows",
)
async def delete_clip(id: ClipId, state: State) -> schemas.Deleted:
    def _delete() -> int:
        with state.media.lock:  # rows first, then the file (a crash leaves an orphan file)
            clip = clip_of(state.index, id)
            n = int(state.index.delete(id)) + state.index.delete_clip(id)
            if n and clip is not None and clip_of(state.index, clip) is None:
                state.media.remove(clip)  # the clip's last window went
            return n

    n = await state.run_index(_delete)
    if not n:
        raise NotFound(f"no item or clip with id {id!r}; list ids with GET /clips")
    return schemas.Deleted(id=id, deleted=n)


@router.get(
    "/{id}/thumbnail",
    operation_id="get_thumbnail",
    response_class=Response,
    summary="The window's middle frame (JPEG); for a clip id, its first window's",
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(400, 401, 404, 503),
    },
)
async def thumbnail(id: ClipId, state: State) -> Response:
    def _find() -> bytes | None:
        data = state.index.thumbnail(id)
        if data is None and state.index.get(id) is None:  # a clip id: its first thumbnail
            for window in clip_item_ids(state.index, id):
                data = state.index.thumbnail(window)
                if data is not None:
                    break
        return data

    data = await state.run_index(_find)
    if data is None:
        raise NotFound(f"no thumbnail for {id!r} (unknown id, or a clip without video)")
    return Response(
        content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"}
    )


def _check_range(request: Request, size: int) -> None:
    """416 (JSON body, ``Content-Range: bytes */size``) for a Range header Starlette's
    FileResponse would refuse; a good one it serves as 206 itself."""
    header = request.headers.get("range")
    if header is None:
        return
    try:
        FileResponse._parse_range_header(header, size)
    except (starlette_responses.MalformedRangeHeader, starlette_responses.RangeNotSatisfiable):
        raise RangeNotSatisfiable(
            f"Range {header[:100]!r} does not fit the file of {size} bytes; "
            "ask for bytes=start-end with start < size",
            size,
        ) from None


_FILE = {"schema": {"type": "string", "format": "binary"}}
_MEDIA_TYPES = {t: _FILE for t in sorted(set(CONTENT_TYPES.values()))}


@router.get(
    "/{id}/media",
    operation_id="get_media",
    response_class=FileResponse,
    summary="The kept source video of an item's clip (HTTP ranges: 206, 416)",
    responses={
        200: {"content": _MEDIA_TYPES},
        206: {"description": "the requested byte range", "content": _MEDIA_TYPES},
        **error_responses(400, 401, 404, 416, 503),
    },
)
async def media(id: ClipId, state: State, request: Request) -> FileResponse:
    if not state.settings.keep_media:
        raise NotFound("this server keeps no source videos (PEMT_KEEP_MEDIA=false)")

    def _find() -> tuple[Path, os.stat_result] | None:
        clip = clip_of(state.index, id)
        path = state.media.path(clip) if clip is not None else None
        if path is None:
            return None
        try:
            return path, path.stat()
        except FileNotFoundError:  # deleted or replaced just now
            return None

    found = await state.run_index(_find)
    if found is None:
        raise NotFound(
            f"no source video kept for {id!r} (unknown id, or stored while PEMT_KEEP_MEDIA=false)"
        )
    path, st = found
    _check_range(request, st.st_size)
    return FileResponse(
        path,
        media_type=state.media.content_type(path),
        stat_result=st,
        headers={
            "Cache-Control": "private, max-age=60",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )
