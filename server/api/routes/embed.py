"""POST /embed: upload a video, get one embedding per window, store them (by default)."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request

from server.api import schemas
from server.api.deps import State, job_slot, receive_media, require_api_key
from server.api.errors import error_responses
from server.api.forms import parse_form
from server.core.decode import WindowInfo
from server.core.errors import InvalidRequest
from server.core.ids import window_id
from server.core.media import MediaStore, choose_suffix
from server.core.pipeline import (
    MODALITIES,
    Embedded,
    check_user_metadata,
    clip_item_ids,
    embed_upload,
    window_metadata,
    windowing,
)

log = logging.getLogger("pemt.server")


def store_clip(
    index: Any,
    clip_id: str,
    records: list[Any],
    media: MediaStore | None = None,
    staged: Path | None = None,
) -> None:
    """Write a clip's windows (one transaction), then drop windows left from an earlier upload
    of the same id. A crash in between leaves stale windows, never loses the new ones.

    ``staged``: the upload already moved into the media folder; it becomes the clip's kept
    file once the windows are committed (server.core.media explains the order). Without it,
    a file kept for an earlier upload of the id is removed."""
    if media is None:
        _store_windows(index, clip_id, records)
        return
    with media.lock:
        _store_windows(index, clip_id, records)
        try:
            if staged is not None:
                media.commit(staged, clip_id)
            else:  # not kept this time: an earlier upload's file no longer matches
                media.remove(clip_id)
        except OSError as e:  # the windows are stored; only the preview is missing
            log.error("could not keep the source of clip %r: %s", clip_id, e)


def _store_windows(index: Any, clip_id: str, records: list[Any]) -> None:
    ids = index.upsert_many(records)
    keep = set(ids)
    stale = [it for it in clip_item_ids(index, clip_id) if it not in keep]
    for item_id in stale:
        index.delete(item_id)


router = APIRouter(tags=["embed"], dependencies=[Depends(require_api_key)])

# what a 413 for a long upload tells the client to do
JOBS_HINT = (
    "submit it as a background job instead: POST /jobs with the same form, then follow GET "
    "/jobs/{id} (pemt-client embed and PemtClient.submit do this)"
)
EMBED_ERRORS = error_responses(400, 401, 408, 413, 415, 422, 429, 503, 507)


@router.post(
    "/embed",
    operation_id="embed",
    response_model=schemas.EmbedResponse,
    responses=EMBED_ERRORS,
    openapi_extra=schemas.multipart_body(schemas.EmbedForm, ("metadata",)),
    summary="Embed an uploaded video (one item per window)",
)
async def embed(request: Request, state: State) -> schemas.EmbedResponse:
    """The body is read (time- and size-limited) and its fields checked before a job slot is
    taken; decoding, the model and the index write run in the slot."""
    t0 = time.perf_counter()
    staged: list[Path] = []
    try:
        return await _embed(request, state, t0, staged)
    finally:
        for path in staged:  # not committed: the request failed or was cancelled
            state.media.discard(path)


async def _embed(
    request: Request, state: State, t0: float, staged: list[Path]
) -> schemas.EmbedResponse:
    from server.index.types import Record, validate_metadata

    s = state.settings
    async with receive_media(request, state) as up:
        form = parse_form(up.fields, schemas.EmbedForm, ("metadata",))
        clip_id = form.id or uuid.uuid4().hex
        meta = form.metadata or {}
        check_user_metadata(meta)
        try:
            meta, _ = validate_metadata(meta)
        except ValueError as e:
            raise InvalidRequest(str(e), code="invalid_metadata") from None
        window_segments = windowing(state, form.window, form.stride)
        state.metrics.observe_stage("upload", up.seconds)
        async with job_slot(state):
            emb = await embed_upload(
                state,
                up,
                window_segments=window_segments,
                stride=form.stride,
                too_long_hint=JOBS_HINT,
            )
            if form.store and s.keep_media:
                assert up.path is not None
                # a rename into data_dir/media while the upload is still ours (no copy)
                suffix = choose_suffix(up.path, up.filename, up.content_type)
                staged.append(state.media.stage(up.path, suffix))
                up.path = None  # moved: receive_media has no temp file left to delete
            n = len(emb.windows)
            ids = [window_id(clip_id, w.index, n) for w in emb.windows]
            t_index = 0.0
            if form.store:
                records = [
                    Record(
                        id=item_id,
                        vectors=_vectors(emb, i, w),
                        clip_id=clip_id,
                        start=w.start,
                        end=w.end,
                        thumbnail=emb.thumbnails[i],
                        metadata=window_metadata(meta, clip_id, w),
                    )
                    for i, (item_id, w) in enumerate(zip(ids, emb.windows, strict=True))
                ]
                ti = time.perf_counter()
                keep = staged[0] if staged else None
                await state.run_index(store_clip, state.index, clip_id, records, state.media, keep)
                staged.clear()
                t_index = time.perf_counter() - ti
                state.metrics.observe_stage("index", t_index)
    fused = emb.vectors[next(iter(MODALITIES))]
    items = [
        schemas.EmbedItem(
            id=item_id,
            clip_id=clip_id,
            window=w.index,
            start=w.start,
            end=w.end,
            embedding=fused[i].tolist(),
            has_audio=w.has_audio,
            has_video=w.has_video,
        )
        for i, (item_id, w) in enumerate(zip(ids, emb.windows, strict=True))
    ]
    total = time.perf_counter() - t0
    state.metrics.observe_stage("total", total)
    timings = {"upload": up.seconds, **emb.timings, "index": t_index, "total": total}
    return schemas.EmbedResponse(
        items=items,
        stored=form.store,
        timings_ms={k: round(v * 1000, 2) for k, v in timings.items()},
    )


def _vectors(emb: Embedded, i: int, w: WindowInfo) -> dict[str, Any]:
    vectors = {"fused": emb.vectors["fused"][i]}
    if w.has_audio:
        vectors["audio"] = emb.vectors["audio"][i]
    if w.has_video:
        vectors["visual"] = emb.vectors["visual"][i]
    return vectors
