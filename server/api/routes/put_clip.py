"""PUT /clips/{id}: store a clip whose windows were embedded outside the service (the bulk
indexer, ``clients/bulk``), with the service's own guarantees: the clip id rules, window ids
``{clip}#w{i}``, the reserved metadata keys, one atomic write replacing any clip of that id
(``store_clip``, as ``/embed``), and vectors only from the model this service serves
(``server.core.identity``; 409 ``model_mismatch`` otherwise)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import AfterValidator

from server.api import schemas
from server.api.deps import State, require_api_key
from server.api.errors import error_responses
from server.api.forms import read_json
from server.api.routes.embed import store_clip
from server.core.errors import InvalidRequest, UnsupportedType
from server.core.identity import require_same_space
from server.core.ids import CLIP_ID_REGEX, MAX_ID_LENGTH, validate_clip_id, window_id
from server.core.pipeline import check_user_metadata, window_metadata

router = APIRouter(prefix="/clips", tags=["clips"], dependencies=[Depends(require_api_key)])

# about 600 windows of the paper model (3 x 768 floats as JSON text + a thumbnail) per request
MAX_PUT_BYTES = 32 * 1024 * 1024

PutClipId = Annotated[
    str,
    Path(
        description="the clip id (no '#'); its windows are stored as '{id}#w{i}'",
        json_schema_extra={"pattern": CLIP_ID_REGEX, "maxLength": MAX_ID_LENGTH},
    ),
    AfterValidator(validate_clip_id),
]


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` references replaced by the definitions (OpenAPI request
    bodies here are inline; see ``schemas.json_schema``)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.rsplit("/", 1)[1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(schemas.PutClipRequest.model_json_schema())}
        },
    }
}


def _records(clip_id: str, req: schemas.PutClipRequest, meta: dict[str, Any]) -> list[Any]:
    from server.index.types import Record

    windows = sorted(req.windows, key=lambda w: w.window)
    n = len(windows)
    if [w.window for w in windows] != list(range(n)):
        raise InvalidRequest(
            f"windows must be numbered 0..{n - 1}, each once (got "
            f"{sorted(w.window for w in req.windows)[:10]}...)",
            code="invalid_request",
        )
    records = []
    for w in windows:
        want = (
            {"fused"}
            | ({"audio"} if w.has_audio else set())
            | ({"visual"} if w.has_video else set())
        )
        if set(w.vectors) != want:
            raise InvalidRequest(
                f"window {w.window}: vectors {sorted(w.vectors)} must be exactly {sorted(want)} "
                "(fused always, audio when has_audio, visual when has_video)",
                code="invalid_vector",
            )
        if w.end < w.start:
            raise InvalidRequest(f"window {w.window}: end {w.end} is before start {w.start}")
        thumb = None
        if w.thumbnail:
            try:
                thumb = base64.b64decode(w.thumbnail, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest(
                    f"window {w.window}: thumbnail is not base64 (send the JPEG's bytes in base64)"
                ) from None
        info = _Info(w.window, w.start, w.end, w.has_audio, w.has_video)
        records.append(
            Record(
                id=window_id(clip_id, w.window, n),
                vectors={str(m): v for m, v in w.vectors.items()},
                clip_id=clip_id,
                start=w.start,
                end=w.end,
                thumbnail=thumb,
                metadata=window_metadata(meta, clip_id, info),  # type: ignore[arg-type]
            )
        )
    return records


class _Info:
    def __init__(self, index: int, start: float, end: float, has_a: bool, has_v: bool) -> None:
        self.index, self.start, self.end = index, start, end
        self.has_audio, self.has_video = has_a, has_v


@router.put(
    "/{id}",
    operation_id="put_clip",
    response_model=schemas.ClipStored,
    responses=error_responses(400, 401, 408, 409, 413, 415, 503, 507),
    openapi_extra=_BODY,
    summary="Store a clip's windows embedded elsewhere (bulk indexing), replacing that id",
)
async def put_clip(id: PutClipId, request: Request, state: State) -> schemas.ClipStored:
    """All windows are written at once (one transaction), replacing every window an earlier
    upload of the id stored; the kept source of an earlier upload is removed."""
    from server.index.types import validate_metadata

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedType(f"send the windows as application/json, got {ctype or 'nothing'!r}")
    req = await read_json(request, schemas.PutClipRequest, state.read_limits, MAX_PUT_BYTES)
    require_same_space(state.model, req.model.model_dump())
    limit = state.settings.job_max_windows
    if len(req.windows) > limit:
        raise InvalidRequest(
            f"{len(req.windows)} windows is over PEMT_JOB_MAX_WINDOWS={limit} for one clip"
        )
    meta = req.metadata or {}
    check_user_metadata(meta)
    try:
        meta, _ = validate_metadata(meta)
    except ValueError as e:
        raise InvalidRequest(str(e), code="invalid_metadata") from None
    try:
        records = _records(id, req, meta)
        await state.run_index(store_clip, state.index, id, records, state.media, None)
    except ValueError as e:  # a vector of the wrong size, a thumbnail over the limit
        raise InvalidRequest(str(e), code="invalid_vector") from None
    return schemas.ClipStored(clip_id=id, ids=[r.id for r in records])
