"""POST /classify: k-NN vote over labeled stored items (metadata key ``label`` by default)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from server.api import convert, schemas
from server.api.deps import State, require_api_key
from server.api.routes.search import QUERY_ERRORS, resolve_query
from server.core.errors import InvalidRequest

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])


@router.post(
    "/classify",
    operation_id="classify",
    response_model=schemas.ClassifyResponse,
    responses=QUERY_ERRORS,
    openapi_extra=schemas.multipart_or_json(
        schemas.ClassifyForm, schemas.ClassifyRequest, ("filter",)
    ),
    summary="Label an upload or a stored item by a k-NN vote",
)
async def classify(request: Request, state: State) -> schemas.ClassifyResponse:
    t0 = time.perf_counter()
    q = await resolve_query(request, state, schemas.ClassifyRequest, schemas.ClassifyForm)
    ts = time.perf_counter()
    try:
        res = await state.run_index(
            state.index.classify,
            q.vector,
            k=q.k,
            modality=q.modality,
            label_key=q.label_key,
            filter=q.filter,
            exclude=q.excluded,
        )
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    t1 = time.perf_counter()
    state.metrics.observe_stage("classify", t1 - ts)
    timings = {**q.timings, "classify": t1 - ts, "total": t1 - t0}
    return schemas.ClassifyResponse(
        label=res.label,
        scores=res.scores,
        neighbors=[convert.hit(h) for h in res.neighbors],
        timings_ms={k: round(v * 1000, 2) for k, v in timings.items()},
    )
