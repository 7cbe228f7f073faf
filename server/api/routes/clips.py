"""Stored items: GET/DELETE /clips/{id}, GET /clips (paged), GET /clips/{id}/thumbnail,
GET /clips/{id}/media (the kept source video, with HTTP ranges)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from server.api import convert, schemas
from server.api.deps import ClipId, State, require_api_key, validate_item_id
from server.core.errors import ApiError, NotFound
from server.core.pipeline import clip_of

router = APIRouter(prefix="/clips", tags=["clips"], dependencies=[Depends(require_api_key)])


@router.get("", response_model=schemas.ClipPage, summary="List stored items, oldest first")
async def list_clips(
    state: State,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    clip_id: Annotated[
        str | None, Query(max_length=128, description="only this clip's windows")
    ] = None,
) -> schemas.ClipPage:
    if clip_id is not None:
        validate_item_id(clip_id, "clip_id")

    def _page() -> tuple[list[Any], int]:
        items = state.index.list(offset, limit, clip_id=clip_id)
        total = (
            len(state.index.list(0, 10_000, clip_id=clip_id)) if clip_id else state.index.count()
        )
        return items, total

    items, total = await state.run_index(_page)
    return schemas.ClipPage(
        items=[convert.clip(i) for i in items], total=total, offset=offset, limit=limit
    )


@router.get("/{id}", response_model=schemas.Clip, summary="One stored item (vectors on request)")
async def get_clip(
    id: ClipId,
    state: State,
    vectors: Annotated[bool, Query(description="include the stored vectors")] = False,
) -> schemas.Clip:
    item = await state.run_index(state.index.get, id, with_vectors=vectors)
    if item is None:
        raise NotFound(f"no item with id {id!r}; list ids with GET /clips")
    return convert.clip(item)


@router.delete(
    "/{id}",
    response_model=schemas.Deleted,
    summary="Delete an item; a clip id also deletes all its windows",
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
    response_class=Response,
    summary="The window's middle frame (JPEG)",
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def thumbnail(id: ClipId, state: State) -> Response:
    data = await state.run_index(state.index.thumbnail, id)
    if data is None:
        raise NotFound(f"no thumbnail for {id!r} (unknown id, or a clip without video)")
    return Response(
        content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"}
    )


class RangeNotSatisfiableError(ApiError):
    status, code = 416, "range_not_satisfiable"


def _check_range(request: Request, size: int) -> None:
    """416 (JSON body, ``Content-Range: bytes */size``) for a Range header Starlette's
    FileResponse would refuse; a good one it serves as 206 itself."""
    header = request.headers.get("range")
    if header is None:
        return
    try:
        FileResponse._parse_range_header(header, size)
    except (MalformedRangeHeader, RangeNotSatisfiable):
        raise RangeNotSatisfiableError(
            f"Range {header[:100]!r} does not fit the file of {size} bytes; "
            "ask for bytes=start-end with start < size",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None


@router.get(
    "/{id}/media",
    response_class=FileResponse,
    summary="The kept source video of an item's clip (HTTP ranges: 206, 416)",
    responses={
        200: {"content": {"video/mp4": {}, "video/webm": {}, "application/octet-stream": {}}},
        206: {"description": "the requested byte range"},
        404: {"description": "unknown id, or the source is not kept (PEMT_KEEP_MEDIA=false)"},
        416: {"description": "a Range outside the file"},
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
