"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.core.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    state = getattr(request.state, "pemt", None)
    size = None
    if state is not None and state.started:
        size = await state.run_index(state.index.count)
    body = m.render((lambda: size) if size is not None else None)
    return Response(content=body, media_type=CONTENT_TYPE)
