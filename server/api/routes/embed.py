"""POST /embed: upload a video, get one embedding per window, store them (by default)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request

from server.api import schemas
from server.api.deps import State, job_slot, require_api_key, validate_item_id
from server.core.errors import BadRequest
from server.core.pipeline import (
    MODALITIES,
    embed_upload,
    parse_bool,
    parse_float,
    parse_json_object,
)
from server.core.uploads import receive_upload


def store_clip(index: Any, clip_id: str, records: list[Any]) -> None:
    """Write a clip's windows (one transaction), then drop windows left from an earlier upload
    of the same id. A crash in between leaves stale windows, never loses the new ones."""
    ids = index.upsert_many(records)
    keep = set(ids)
    stale = [it.id for it in index.list(0, 10_000, clip_id=clip_id) if it.id not in keep]
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
        await state.run_index(store_clip, state.index, clip_id, records)
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
