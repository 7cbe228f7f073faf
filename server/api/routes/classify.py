"""POST /classify: k-NN vote over labeled stored items (metadata key ``label`` by default)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from server.api import convert, schemas
from server.api.deps import State, require_api_key
from server.api.routes.search import _FORM, _filter, resolve_query
from server.core.errors import BadRequest

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])

_CLASSIFY_FORM: dict[str, dict[str, Any]] = {
    **_FORM,
    "label_key": {"type": "string", "default": "label"},
}


@router.post(
    "/classify",
    response_model=schemas.ClassifyResponse,
    openapi_extra=schemas.multipart_or_json(_CLASSIFY_FORM, schemas.ClassifyRequest),
    summary="Label an upload or a stored item by a k-NN vote",
)
async def classify(request: Request, state: State) -> schemas.ClassifyResponse:
    t0 = time.perf_counter()
    q, extra = await resolve_query(request, state, schemas.ClassifyRequest)
    label_key = extra.get("label_key", "label") if isinstance(extra, dict) else extra.label_key
    if not label_key or len(label_key) > 64:
        raise BadRequest("label_key must be 1-64 characters", code="invalid_request", status=422)
    ts = time.perf_counter()
    try:
        res = await state.run_index(
            state.index.classify,
            q.vector,
            k=q.k,
            modality=q.modality,
            label_key=label_key,
            filter=_filter(q.filter),
            exclude=q.excluded,
        )
    except ValueError as e:
        raise BadRequest(str(e), code="invalid_request", status=422) from None
    t1 = time.perf_counter()
    state.metrics.observe_stage("classify", t1 - ts)
    timings = {**q.timings, "classify": t1 - ts, "total": t1 - t0}
    return schemas.ClassifyResponse(
        label=res.label,
        scores=res.scores,
        neighbors=[convert.hit(h) for h in res.neighbors],
        timings_ms={k: round(v * 1000, 2) for k, v in timings.items()},
    )
