"""POST /embed: upload a video, get one embedding per window, store them (by default)."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request

from server.api import schemas
from server.api.deps import State, job_slot, require_api_key, validate_item_id
from server.core.errors import BadRequest
from server.core.media import MediaStore, choose_suffix
from server.core.pipeline import (
    MODALITIES,
    clip_item_ids,
    embed_upload,
    parse_bool,
    parse_float,
    parse_json_object,
)
from server.core.uploads import receive_upload

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

_FORM: dict[str, dict[str, Any]] = {
    "id": {
        "type": "string",
        "description": "clip id (generated when omitted); windows get '{id}#w{i}'",
    },
    "metadata": {"type": "string", "description": "JSON object stored with every window"},
    "store": {"type": "boolean", "default": True, "description": "add the windows to the index"},
    "window": {
        "type": "number",
        "description": "seconds of real content per window (<= the model's)",
    },
    "stride": {
        "type": "number",
        "description": "seconds between window starts (default: half a window)",
    },
}


@router.post(
    "/embed",
    response_model=schemas.EmbedResponse,
    openapi_extra=schemas.multipart_body(_FORM),
    summary="Embed an uploaded video (one item per window)",
)
async def embed(request: Request, state: State) -> schemas.EmbedResponse:
    t0 = time.perf_counter()
    async with job_slot(request, state):
        return await _embed(request, state, t0)


async def _embed(request: Request, state: State, t0: float) -> schemas.EmbedResponse:
    staged: list[Path] = []
    try:
        return await _embed_upload(request, state, t0, staged)
    finally:
        for path in staged:  # not committed: the request failed or was cancelled
            state.media.discard(path)


async def _embed_upload(
    request: Request, state: State, t0: float, staged: list[Path]
) -> schemas.EmbedResponse:
    from server.index.types import Record, validate_metadata

    s = state.settings
    async with receive_upload(request, s.data_dir / "uploads", s.max_upload_bytes) as up:
        f = up.fields
        clip_id = f.get("id") or uuid.uuid4().hex
        validate_item_id(clip_id)
        if "#" in clip_id:
            raise BadRequest(
                f"id {clip_id!r} must not contain '#': window ids are '{{id}}#w{{i}}'",
                code="invalid_id",
            )
        meta = parse_json_object(f, "metadata") or {}
        try:
            meta, _ = validate_metadata(meta)
        except ValueError as e:
            raise BadRequest(str(e), code="invalid_metadata") from None
        store = parse_bool(f, "store", True)
        window, stride = parse_float(f, "window"), parse_float(f, "stride")
        state.metrics.observe_stage("upload", up.seconds)
        emb = await embed_upload(state, up, window=window, stride=stride)
        if store and s.keep_media:
            assert up.path is not None
            # a rename into data_dir/media while the upload is still ours (no copy)
            suffix = choose_suffix(up.path, up.filename, up.content_type)
            staged.append(state.media.stage(up.path, suffix))
            up.path = None  # moved: receive_upload has no temp file left to delete
    multi = len(emb.windows) > 1
    ids = [f"{clip_id}#w{w.index}" if multi else clip_id for w in emb.windows]
    t_index = 0.0
    if store:
        records = []
        for i, (item_id, w) in enumerate(zip(ids, emb.windows, strict=True)):
            vectors = {"fused": emb.vectors["fused"][i]}
            if w.has_audio:
                vectors["audio"] = emb.vectors["audio"][i]
            if w.has_video:
                vectors["visual"] = emb.vectors["visual"][i]
            records.append(
                Record(
                    id=item_id,
                    vectors=vectors,
                    clip_id=clip_id,
                    start=w.start,
                    end=w.end,
                    thumbnail=emb.thumbnails[i],
                    metadata={
                        **meta,
                        "clip_id": clip_id,
                        "window": w.index,
                        "has_audio": w.has_audio,
                        "has_video": w.has_video,
                    },
                )
            )
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
        items=items, stored=store, timings_ms={k: round(v * 1000, 2) for k, v in timings.items()}
    )
