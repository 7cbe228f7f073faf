"""POST /search: nearest stored items to an upload, a stored item or clip, or a vector, by one
modality, or with ``best`` by each item's best modality (``server.core.best``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, Depends, Request

from server.api import convert, schemas
from server.api.deps import State, job_slot, receive_media, require_api_key
from server.api.errors import error_responses
from server.api.forms import parse_form, read_json
from server.core.best import search_best
from server.core.errors import InvalidRequest, NotFound, Unprocessable
from server.core.pipeline import (
    clip_item_ids,
    clip_summary,
    embed_upload,
    query_vector,
    query_vectors,
    windowing,
)
from server.core.state import AppState
from server.core.uploads import is_multipart

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])

QUERY_ERRORS = error_responses(400, 401, 404, 408, 413, 415, 422, 429, 503, 507)
BEST = "best"  # /search only: each item scored by its best shared modality (server.core.best)


@dataclass
class Query:
    """A resolved query: its vectors (modality -> (D,) vector: the one asked for, or for
    ``best`` each the query has), modality, k, filter, and the ids to leave out (a stored
    item's whole clip: every window sharing its clip_id)."""

    vectors: dict[str, np.ndarray]
    modality: str
    k: int
    filter: dict[str, Any] | None
    excluded: tuple[str, ...]
    timings: dict[str, float]
    label_key: str = "label"

    @property
    def vector(self) -> np.ndarray:
        """The one vector of a single-modality query."""
        return self.vectors[self.modality]


async def resolve_query(
    request: Request,
    state: AppState,
    json_model: type[schemas.SearchRequest | schemas.ClassifyRequest],
    form_model: type[schemas.SearchForm | schemas.ClassifyForm],
) -> Query:
    """From a multipart upload (embedded now, not stored) or a JSON body."""
    s = state.settings
    if is_multipart(request):
        async with receive_media(request, state) as up:
            form = parse_form(up.fields, form_model, ("filter",))
            _check_k(form.k, s.max_k)
            window_segments = windowing(state, form.window, form.stride)
            async with job_slot(state):
                emb = await embed_upload(
                    state, up, window_segments=window_segments, stride=form.stride
                )
            if form.modality == BEST:
                vectors = query_vectors(emb)
            else:
                vectors = {form.modality: query_vector(emb, form.modality)}
            timings = {"upload": up.seconds, **emb.timings}
        label_key = getattr(form, "label_key", "label")
        return Query(vectors, form.modality, form.k, form.filter, (), timings, label_key)
    req = await read_json(request, json_model, state.read_limits)
    _check_k(req.k, s.max_k)
    label_key = getattr(req, "label_key", "label")
    if req.id is not None:
        vectors, excluded = await _stored_query(state, req.id, req.modality)
        return Query(vectors, req.modality, req.k, req.filter, excluded, {}, label_key)
    if req.modality == BEST:
        raise InvalidRequest(
            "modality 'best' needs an upload ('file') or a stored 'id': it matches each of the "
            "query's vectors (fused, audio, visual) in its own space, and one raw vector belongs "
            "to one space; send modality fused, audio or visual with a vector"
        )
    from server.index.types import as_vector

    try:
        vec = as_vector(req.vector, state.backend.cfg.embed_dim, "vector")
    except ValueError as e:
        raise InvalidRequest(str(e), code="invalid_vector") from None
    return Query({req.modality: vec}, req.modality, req.k, req.filter, (), {}, label_key)


def _check_k(k: int, max_k: int) -> None:
    if k > max_k:
        raise InvalidRequest(f"k={k} exceeds this server's PEMT_MAX_K={max_k}; ask for fewer")


async def _stored_query(
    state: AppState, id: str, modality: str
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The query vectors of a stored item, or of a clip id (per modality the normalized mean
    of its windows, as an upload of the clip gives): the one asked for, or for ``best`` each
    the item has; and the ids to leave out: every window of the clip."""

    def _find() -> tuple[Any, tuple[str, ...]] | None:
        item = state.index.get(id, with_vectors=True)
        if item is not None:
            if not item.clip_id:
                return item, (id,)
            return item, (id, *clip_item_ids(state.index, item.clip_id))
        found = clip_summary(state.index, id, with_vectors=True)
        return None if found is None else (found[0], tuple(found[1]))

    found = await state.run_index(_find)
    if found is None:
        raise NotFound(f"no item or clip with id {id!r}; list ids with GET /clips")
    item, excluded = found
    stored = {m: np.asarray(v, np.float32) for m, v in (item.vectors or {}).items()}
    if modality == BEST:
        if not stored:
            raise Unprocessable(f"{id!r} has no stored vector to search with", code="no_modality")
        return stored, excluded
    if modality not in stored:
        raise Unprocessable(
            f"{id!r} has no {modality} vector (the clip lacks that stream); "
            f"use one of {list(item.modalities)}",
            code="no_modality",
        )
    return {modality: stored[modality]}, excluded


@router.post(
    "/search",
    operation_id="search",
    response_model=schemas.SearchResponse,
    responses=QUERY_ERRORS,
    openapi_extra=schemas.multipart_or_json(schemas.SearchForm, schemas.SearchRequest, ("filter",)),
    summary="Find the stored items nearest to an upload, an id or a vector",
)
async def search(request: Request, state: State) -> schemas.SearchResponse:
    t0 = time.perf_counter()
    q = await resolve_query(request, state, schemas.SearchRequest, schemas.SearchForm)
    ts = time.perf_counter()
    try:
        if q.modality == BEST:
            best = await state.run_index(
                search_best, state.index, q.vectors, q.k, q.filter, exclude=q.excluded
            )
            results = [convert.hit(b.hit, cast(schemas.Modality, b.modality)) for b in best]
        else:
            hits = await state.run_index(
                state.index.search,
                q.vector,
                k=q.k,
                modality=q.modality,
                filter=q.filter,
                exclude=q.excluded,
            )
            results = [convert.hit(h) for h in hits]
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    t1 = time.perf_counter()
    state.metrics.observe_stage("search", t1 - ts)
    timings = {**q.timings, "search": t1 - ts, "total": t1 - t0}
    return schemas.SearchResponse(
        results=results,
        timings_ms={k: round(v * 1000, 2) for k, v in timings.items()},
    )
