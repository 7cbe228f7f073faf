"""Liveness, readiness and service facts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from server.api import schemas
from server.api.deps import State, require_api_key
from server.api.errors import error_body, error_responses
from server.core.uploads import free_bytes

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", summary="The process is up")
async def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=schemas.Ready,
    responses=error_responses(503),
    summary="Backend and index are ready and the data directory has room (503 otherwise)",
)
async def readyz(request: Request) -> Any:
    state = getattr(request.state, "pemt", None)
    if state is None or not state.started:
        return JSONResponse(error_body("not_ready", "starting or stopping"), status_code=503)
    what = []
    check = getattr(state.backend, "check_ready", None)
    if not (await check() if check is not None else state.backend.ready()):
        what.append(f"backend {state.backend.name} is not ready")
    count = None
    try:
        count = await state.run_index(state.index.count)
    except Exception as e:
        what.append(f"index failed: {e}")
    data_dir = state.settings.data_dir
    free = free_bytes(data_dir)
    if free < state.settings.min_free_bytes:
        what.append(
            f"the data directory {data_dir} has {free} bytes free, under "
            f"PEMT_MIN_FREE_BYTES={state.settings.min_free_bytes}; free space there"
        )
    if what:
        return JSONResponse(error_body("not_ready", "; ".join(what)), status_code=503)
    return schemas.Ready(status="ready", backend=state.backend.name, count=count or 0)


@router.get(
    "/info",
    operation_id="info",
    summary="Item count, backend, model and settings",
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 503),
)
async def info(state: State) -> dict[str, Any]:
    from server.core.ingest import model_identity

    count = await state.run_index(state.index.count)
    identity = await state.run_index(model_identity, state.backend)
    cfg = state.backend.cfg
    return {
        "count": count,
        "backend": state.backend.info(),
        "model": {
            "name": cfg.name,
            "embed_dim": cfg.embed_dim,
            "window_seconds": cfg.media.window_seconds,
            "segment_seconds": cfg.media.segment_seconds,
            "config": cfg.to_dict(),
            "identity": identity,  # what PUT /clips/{id} must be sent with
        },
        "config": state.settings.public(),
        "jobs": {"limit": state.jobs.limit, "in_flight": state.jobs.in_flight},
        "data_dir_free_bytes": free_bytes(state.settings.data_dir),
    }
