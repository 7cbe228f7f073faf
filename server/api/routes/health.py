"""Liveness, readiness and service facts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from server.api.deps import State, require_api_key
from server.core.errors import error_body

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Backend and index are ready (503 otherwise)")
async def readyz(request: Request) -> JSONResponse:
    state = getattr(request.state, "pemt", None)
    if state is None or not state.started:
        return JSONResponse(error_body("not_ready", "starting or stopping"), status_code=503)
    check = getattr(state.backend, "check_ready", None)
    backend_ok = await check() if check is not None else state.backend.ready()
    try:
        count = await state.run_index(state.index.count)
        index_ok = True
    except Exception as e:
        count, index_ok = None, False
        index_err = str(e)
    if not (backend_ok and index_ok):
        what = []
        if not backend_ok:
            what.append(f"backend {state.backend.name} is not ready")
        if not index_ok:
            what.append(f"index failed: {index_err}")
        return JSONResponse(error_body("not_ready", "; ".join(what)), status_code=503)
    return JSONResponse({"status": "ready", "backend": state.backend.name, "count": count})


@router.get(
    "/info",
    summary="Item count, backend, model and settings",
    dependencies=[Depends(require_api_key)],
)
async def info(state: State) -> dict[str, Any]:
    count = await state.run_index(state.index.count)
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
        },
        "config": state.settings.public(),
        "jobs": {"limit": state.jobs.limit, "in_flight": state.jobs.in_flight},
    }
