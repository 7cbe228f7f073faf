"""The work behind the routes: upload -> decode (child process) -> model -> index."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.core.decode import DecodeRequest, WindowInfo
from server.core.errors import BadRequest, MediaRejected
from server.core.state import AppState
from server.core.uploads import Upload

__all__ = [
    "MODALITIES",
    "Embedded",
    "clip_item_ids",
    "clip_of",
    "embed_upload",
    "parse_bool",
    "parse_float",
    "parse_int",
    "parse_json_object",
    "query_vector",
]

# search modality -> model output
MODALITIES = {"fused": "embedding", "audio": "audio_embedding", "visual": "visual_embedding"}


@dataclass
class Embedded:
    windows: list[WindowInfo]
    vectors: dict[str, np.ndarray]  # modality -> (W, D)
    thumbnails: list[bytes | None]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


def window_segments(state: AppState, window: float | None) -> int | None:
    if window is None:
        return None
    media = state.backend.cfg.media
    n = window / media.segment_seconds
    if not math.isfinite(n) or abs(n - round(n)) > 1e-6 or not 1 <= round(n) <= media.num_segments:
        raise BadRequest(
            f"window={window} s must be a whole number of {media.segment_seconds:g}-s segments "
            f"between {media.segment_seconds:g} and {media.window_seconds:g} s (the model's window)",
            code="invalid_window",
        )
    return round(n)


async def embed_upload(
    state: AppState, upload: Upload, *, window: float | None = None, stride: float | None = None
) -> Embedded:
    s = state.settings
    seg = state.backend.cfg.media.segment_seconds
    if stride is not None:
        k = stride / seg if math.isfinite(stride) else -1.0
        if not (0 < stride <= s.max_duration_s and k >= 1 and abs(k - round(k)) < 1e-6):
            raise BadRequest(
                f"stride={stride} s must be a positive multiple of {seg:g} s (one segment) and "
                f"at most {s.max_duration_s:g} s",
                code="invalid_stride",
            )
    assert upload.path is not None
    if upload.size == 0:
        state.metrics.media_errors.labels("empty").inc()
        raise MediaRejected("empty", "the uploaded file is empty (0 bytes); send a video file")
    req = DecodeRequest(
        path=str(upload.path),
        media=state.backend.cfg.media,
        window_segments=window_segments(state, window),
        stride_s=stride,
        max_bytes=s.max_upload_bytes,
        max_duration_s=s.max_duration_s,
        max_pixels=s.max_pixels,
        time_budget_s=s.decode_timeout_s,
        require_audio=s.require_audio,
        require_video=s.require_video,
    )
    t0 = time.perf_counter()
    try:
        decoded = await state.decoder.decode(req)
    except MediaRejected as e:
        state.metrics.media_errors.labels(e.code).inc()
        raise
    t1 = time.perf_counter()
    outputs = await state.backend.embed(decoded.inputs)
    t2 = time.perf_counter()
    state.metrics.observe_stage("decode", t1 - t0)
    state.metrics.observe_stage("model", t2 - t1)
    state.metrics.windows.inc(len(decoded.windows))
    vectors = {m: np.asarray(outputs[name], dtype=np.float32) for m, name in MODALITIES.items()}
    return Embedded(
        decoded.windows, vectors, decoded.thumbnails, {"decode": t1 - t0, "model": t2 - t1}
    )


def clip_item_ids(index: Any, clip_id: str) -> list[str]:
    """Ids of every stored item (window) of a clip; blocking (run it in the index pool)."""
    ids: list[str] = []
    while True:
        page = index.list(len(ids), 10_000, clip_id=clip_id)
        ids += [it.id for it in page]
        if len(page) < 10_000:
            return ids


def clip_of(index: Any, item_id: str) -> str | None:
    """The clip an id names: a stored item's clip (itself if it has none), or a clip id that
    has windows; None if neither. Blocking."""
    item = index.get(item_id)
    if item is not None:
        return str(item.clip_id or item.id)
    return item_id if index.list(0, 1, clip_id=item_id) else None


def query_vector(emb: Embedded, modality: str) -> np.ndarray:
    """One query for a whole upload: the normalized mean of its windows' vectors."""
    v = emb.vectors[modality].mean(axis=0)
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n == 0:
        raise BadRequest(
            f"the upload has no usable {modality} signal to search with", code="no_signal"
        )
    return (v / n).astype(np.float32)


# --- form fields ------------------------------------------------------------------------------


def parse_json_object(fields: dict[str, str], name: str) -> dict[str, Any] | None:
    raw = fields.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadRequest(
            f"form field {name!r} is not valid JSON ({e.msg}); send a JSON object",
            code="invalid_request",
        ) from None
    if not isinstance(value, dict):
        raise BadRequest(
            f"form field {name!r} must be a JSON object, got {type(value).__name__}",
            code="invalid_request",
        )
    return value


def parse_float(fields: dict[str, str], name: str) -> float | None:
    raw = fields.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        v = float(raw)
    except ValueError:
        raise BadRequest(
            f"form field {name!r} must be a number of seconds, got {raw!r}", code="invalid_request"
        ) from None
    if not math.isfinite(v):
        raise BadRequest(f"form field {name!r} must be finite", code="invalid_request")
    return v


def parse_int(fields: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = fields.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(
            f"form field {name!r} must be an integer, got {raw!r}", code="invalid_request"
        ) from None
    if not lo <= v <= hi:
        raise BadRequest(f"form field {name!r}={v} must be in {lo}..{hi}", code="invalid_request")
    return v


def parse_bool(fields: dict[str, str], name: str, default: bool) -> bool:
    raw = fields.get(name)
    if raw is None or raw.strip() == "":
        return default
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise BadRequest(
        f"form field {name!r} must be true or false, got {raw!r}", code="invalid_request"
    )
