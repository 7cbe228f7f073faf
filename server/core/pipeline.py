"""The work behind the routes: upload -> decode (child process) -> model -> index."""

from __future__ import annotations

import contextlib
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
    "min_stride_segments",
    "parse_bool",
    "parse_float",
    "parse_int",
    "parse_json_object",
    "query_vector",
    "resolve_stride",
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


def min_stride_segments(state: AppState, window: int) -> int:
    """The smallest stride (in segments) a request with ``window``-segment windows may use:
    PEMT_MIN_STRIDE_S rounded up to whole segments, or by default a quarter of the window, so
    that no second of the clip is embedded more than four times."""
    s = state.settings
    if s.min_stride_s is None:
        return max(1, math.ceil(window / 4))
    return max(1, math.ceil(s.min_stride_s / state.backend.cfg.media.segment_seconds - 1e-6))


def resolve_stride(state: AppState, stride: float | None, window: int) -> float | None:
    """The stride to decode with, in seconds, checked against the settings (400
    ``invalid_stride``); None keeps pemt.media's default (half a window) when that is allowed."""
    s = state.settings
    seg = state.backend.cfg.media.segment_seconds
    floor = min_stride_segments(state, window)
    if stride is None:
        return None if max(1, window // 2) >= floor else floor * seg
    k = stride / seg if math.isfinite(stride) else -1.0
    if not (0 < stride <= s.max_duration_s and k >= 1 and abs(k - round(k)) < 1e-6):
        raise BadRequest(
            f"stride={stride} s must be a positive multiple of {seg:g} s (one segment) and "
            f"at most {s.max_duration_s:g} s",
            code="invalid_stride",
        )
    if round(k) < floor:
        setting = (
            f"PEMT_MIN_STRIDE_S={s.min_stride_s:g}"
            if s.min_stride_s is not None
            else "a quarter of the window (PEMT_MIN_STRIDE_S unset)"
        )
        raise BadRequest(
            f"stride={stride:g} s is below the minimum of {floor * seg:g} s for "
            f"{window * seg:g}-s windows ({setting}); send stride={floor * seg:g} or more",
            code="invalid_stride",
        )
    return stride


async def embed_upload(
    state: AppState, upload: Upload, *, window: float | None = None, stride: float | None = None
) -> Embedded:
    """Decode the upload in a child process and embed it batch by batch as windows arrive;
    only the vectors, window times and JPEG thumbnails are kept (see server.core.decode)."""
    s = state.settings
    media = state.backend.cfg.media
    segments = window_segments(state, window)
    stride_s = resolve_stride(state, stride, segments or media.num_segments)
    assert upload.path is not None
    if upload.size == 0:
        state.metrics.media_errors.labels("empty").inc()
        raise MediaRejected("empty", "the uploaded file is empty (0 bytes); send a video file")
    req = DecodeRequest(
        path=str(upload.path),
        media=media,
        window_segments=segments,
        stride_s=stride_s,
        max_bytes=s.max_upload_bytes,
        max_duration_s=s.max_duration_s,
        max_pixels=s.max_pixels,
        time_budget_s=s.decode_timeout_s,
        max_gap_s=s.max_gap_s,
        require_audio=s.require_audio,
        require_video=s.require_video,
        max_windows=s.max_windows_per_request,
    )
    windows: list[WindowInfo] = []
    thumbnails: list[bytes | None] = []
    parts: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    model_s = 0.0
    t0 = time.perf_counter()
    try:
        batches = state.decoder.stream(req, state.backend.max_batch)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                tm = time.perf_counter()
                outputs = await state.backend.embed(batch.inputs)
                model_s += time.perf_counter() - tm
                for m, name in MODALITIES.items():
                    parts[m].append(np.asarray(outputs[name], dtype=np.float32))
                windows += batch.windows
                thumbnails += batch.thumbnails
                state.metrics.windows.inc(len(batch.windows))
    except MediaRejected as e:
        state.metrics.media_errors.labels(e.code).inc()
        raise
    decode_s = time.perf_counter() - t0 - model_s  # waiting for the child's windows
    state.metrics.observe_stage("decode", decode_s)
    state.metrics.observe_stage("model", model_s)
    vectors = {m: np.concatenate(p) for m, p in parts.items()}
    return Embedded(windows, vectors, thumbnails, {"decode": decode_s, "model": model_s})


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
