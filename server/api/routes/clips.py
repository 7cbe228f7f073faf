"""Stored items: GET/DELETE /clips/{id}, GET /clips (paged), GET /clips/{id}/thumbnail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from server.api import convert, schemas
from server.api.deps import ClipId, State, require_api_key, validate_item_id
from server.core.errors import NotFound

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
        return int(state.index.delete(id)) + state.index.delete_clip(id)

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
