"""POST /search: nearest stored items to an upload, a stored item, or a vector."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError

from server.api import convert, schemas
from server.api.deps import State, job_slot, require_api_key, validate_item_id
from server.core.errors import BadRequest, NotFound, UnsupportedMediaType
from server.core.pipeline import (
    clip_item_ids,
    embed_upload,
    parse_float,
    parse_int,
    parse_json_object,
    query_vector,
)
from server.core.state import AppState
from server.core.uploads import is_multipart, receive_upload

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])

_FORM: dict[str, dict[str, Any]] = {
    "k": {"type": "integer", "default": 10},
    "filter": {"type": "string", "description": "JSON object: metadata key -> value"},
    "modality": {"type": "string", "enum": ["fused", "audio", "visual"], "default": "fused"},
    "window": {"type": "number"},
    "stride": {"type": "number"},
}


async def read_json(request: Request, model: type[BaseModel]) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType(
            f"send application/json with 'id' or 'vector', or multipart/form-data with 'file'; got {ctype or 'no content type'!r}"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > 4 * 1024 * 1024:
        raise BadRequest("JSON body larger than 4 MiB", code="too_large", status=413)
    body = await request.body()
    if len(body) > 4 * 1024 * 1024:
        raise BadRequest("JSON body larger than 4 MiB", code="too_large", status=413)
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
        raise BadRequest("; ".join(parts), code="invalid_request", status=422) from None


@dataclass
class Query:
    """A resolved query: vector, modality, k, filter, and the ids to leave out (a stored
    item's whole clip: every window sharing its clip_id)."""

    vector: np.ndarray
    modality: str
    k: int
    filter: dict[str, Any] | None
    excluded: tuple[str, ...]
    timings: dict[str, float]


async def resolve_query(
    request: Request, state: AppState, model: type[schemas._Query]
) -> tuple[Query, Any]:
    """From a multipart upload (embedded now, not stored) or a JSON body."""
    s = state.settings
    if is_multipart(request):
        async with (
            job_slot(request, state),
            receive_upload(request, s.data_dir / "uploads", s.max_upload_bytes) as up,
        ):
            f = up.fields
            modality = f.get("modality") or "fused"
            if modality not in ("fused", "audio", "visual"):
                raise BadRequest(
                    f"modality={modality!r} is not one of fused, audio, visual",
                    code="invalid_request",
                    status=422,
                )
            k = parse_int(f, "k", min(s.default_k, s.max_k), 1, s.max_k)
            flt = parse_json_object(f, "filter")
            extra = {key: f[key] for key in f if key in ("label_key",)}
            emb = await embed_upload(
                state, up, window=parse_float(f, "window"), stride=parse_float(f, "stride")
            )
            vec = query_vector(emb, modality)
            timings = {"upload": up.seconds, **emb.timings}
        return Query(vec, modality, k, flt, (), timings), extra
    req = await read_json(request, model)
    if req.k > s.max_k:
        raise BadRequest(
            f"k={req.k} exceeds PEMT_MAX_K={s.max_k}", code="invalid_request", status=422
        )
    if req.id is not None:
        item_id = validate_item_id(req.id)

        def _item() -> tuple[Any, tuple[str, ...]]:
            item = state.index.get(item_id, with_vectors=True)
            if item is None or not item.clip_id:
                return item, (item_id,)
            return item, (item_id, *clip_item_ids(state.index, item.clip_id))

        item, excluded = await state.run_index(_item)
        if item is None:
            raise NotFound(f"no item with id {item_id!r}; list ids with GET /clips")
        stored = (item.vectors or {}).get(req.modality)
        if stored is None:
            raise BadRequest(
                f"item {item_id!r} has no {req.modality} vector (the clip lacks that stream); "
                f"use one of {list(item.modalities)}",
                code="no_modality",
                status=422,
            )
        return Query(
            np.asarray(stored, np.float32), req.modality, req.k, req.filter, excluded, {}
        ), req
    from server.index.types import as_vector

    try:
        vec = as_vector(req.vector, state.backend.cfg.embed_dim, "vector")
    except ValueError as e:
        raise BadRequest(str(e), code="invalid_vector", status=422) from None
    return Query(vec, req.modality, req.k, req.filter, (), {}), req


def _filter(flt: dict[str, Any] | None) -> Any:
    if flt is None:
        return None
    try:
        json.dumps(flt)
    except (TypeError, ValueError):
        raise BadRequest(
            "filter must be a JSON object of key -> scalar", code="invalid_filter"
        ) from None
    return flt


@router.post(
    "/search",
    response_model=schemas.SearchResponse,
    openapi_extra=schemas.multipart_or_json(_FORM, schemas.SearchRequest),
    summary="Find the stored items nearest to an upload, an id or a vector",
)
async def search(request: Request, state: State) -> schemas.SearchResponse:
    t0 = time.perf_counter()
    q, _ = await resolve_query(request, state, schemas.SearchRequest)
    ts = time.perf_counter()
    try:
        hits = await state.run_index(
            state.index.search,
            q.vector,
            k=q.k,
            modality=q.modality,
            filter=_filter(q.filter),
            exclude=q.excluded,
        )
    except ValueError as e:
        raise BadRequest(str(e), code="invalid_request", status=422) from None
    t1 = time.perf_counter()
    state.metrics.observe_stage("search", t1 - ts)
    timings = {**q.timings, "search": t1 - ts, "total": t1 - t0}
    return schemas.SearchResponse(
        results=[convert.hit(h) for h in hits],
        timings_ms={k: round(v * 1000, 2) for k, v in timings.items()},
    )
