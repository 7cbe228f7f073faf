"""The work behind the routes: upload -> decode (child process) -> model -> index."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.core.decode import DecodeRequest, WindowInfo
from server.core.errors import InvalidRequest, MediaRejected, Unprocessable
from server.core.state import AppState
from server.core.uploads import Upload

__all__ = [
    "MODALITIES",
    "RESERVED_METADATA",
    "Embedded",
    "check_user_metadata",
    "clip_item_ids",
    "clip_of",
    "clip_summary",
    "decode_request",
    "embed_upload",
    "min_stride_segments",
    "query_vector",
    "query_vectors",
    "resolve_stride",
    "window_metadata",
    "windowing",
]

# search modality -> model output
MODALITIES = {"fused": "embedding", "audio": "audio_embedding", "visual": "visual_embedding"}
# metadata keys the service sets on every stored window (a user's metadata may not use them)
RESERVED_METADATA = ("clip_id", "window", "has_audio", "has_video")


def check_user_metadata(metadata: dict[str, Any]) -> None:
    """Refuse metadata keys the service sets itself (they would be overwritten)."""
    taken = sorted(k for k in metadata if k in RESERVED_METADATA)
    if taken:
        raise InvalidRequest(
            f"metadata key(s) {', '.join(map(repr, taken))} are set by the service on every "
            f"window ({', '.join(RESERVED_METADATA)}); use other names for your own values",
            code="invalid_metadata",
        )


def window_metadata(user: dict[str, Any], clip_id: str, w: WindowInfo) -> dict[str, Any]:
    """What a stored window's metadata holds: the user's keys plus the service's own."""
    return {
        **user,
        "clip_id": clip_id,
        "window": w.index,
        "has_audio": w.has_audio,
        "has_video": w.has_video,
    }


@dataclass
class Embedded:
    windows: list[WindowInfo]
    vectors: dict[str, np.ndarray]  # modality -> (W, D)
    thumbnails: list[bytes | None]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


def windowing(state: AppState, window: float | None, stride: float | None) -> int | None:
    """Check ``window`` and ``stride`` (seconds) against the model; return the window in
    segments (None: the model's)."""
    media = state.backend.cfg.media
    seg = media.segment_seconds
    if media.layout == "spread" and (window is not None or stride is not None):
        raise InvalidRequest(
            "this model spreads one window's segments over the whole video (layout 'spread'); "
            "window and stride do not apply: leave them out",
            code="invalid_window" if window is not None else "invalid_stride",
        )
    if stride is not None:
        k = stride / seg if math.isfinite(stride) else -1.0
        max_s = state.settings.max_duration_s
        if not (0 < stride <= max_s and k >= 1 and abs(k - round(k)) < 1e-6):
            raise InvalidRequest(
                f"stride={stride} s must be a positive multiple of {seg:g} s (one segment) and "
                f"at most {max_s:g} s",
                code="invalid_stride",
            )
    if window is None:
        return None
    n = window / seg
    if not math.isfinite(n) or abs(n - round(n)) > 1e-6 or not 1 <= round(n) <= media.num_segments:
        raise InvalidRequest(
            f"window={window} s must be a whole number of {seg:g}-s segments "
            f"between {seg:g} and {media.window_seconds:g} s (the model's window)",
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
    """The stride to decode with, in seconds (``stride`` already passed :func:`windowing`),
    checked against the floor (400 ``invalid_stride``); None keeps pemt.media's default (half
    a window) when that is allowed. The spread layout has no stride."""
    media = state.backend.cfg.media
    if media.layout == "spread":
        return None
    seg = media.segment_seconds
    floor = min_stride_segments(state, window)
    if stride is None:
        return None if max(1, window // 2) >= floor else floor * seg
    if round(stride / seg) < floor:
        s = state.settings
        setting = (
            f"PEMT_MIN_STRIDE_S={s.min_stride_s:g}"
            if s.min_stride_s is not None
            else "a quarter of the window (PEMT_MIN_STRIDE_S unset)"
        )
        raise InvalidRequest(
            f"stride={stride:g} s is below the minimum of {floor * seg:g} s for "
            f"{window * seg:g}-s windows ({setting}); send stride={floor * seg:g} or more",
            code="invalid_stride",
        )
    return stride


def decode_request(
    state: AppState,
    path: str,
    window_segments: int | None,
    stride: float | None,
    *,
    job: bool = False,
    skip_windows: int = 0,
) -> DecodeRequest:
    """What the decode child gets for a file: the model's media config, the request's
    window and stride (checked by ``windowing``; the stride also against the floor) and the
    service's limits. A synchronous request (``job=False``) may last at most
    ``PEMT_EMBED_MAX_DURATION_S`` and give ``PEMT_MAX_WINDOWS_PER_REQUEST`` windows within
    ``PEMT_DECODE_TIMEOUT_S``; a background job ``PEMT_MAX_DURATION_S``,
    ``PEMT_JOB_MAX_WINDOWS`` and ``PEMT_JOB_DECODE_TIMEOUT_S``, with no byte limit of its own
    (uploads were bounded when received, server-side files are the operator's)."""
    s = state.settings
    media = state.backend.cfg.media
    stride_s = resolve_stride(state, stride, window_segments or media.num_segments)
    return DecodeRequest(
        path=path,
        media=media,
        window_segments=window_segments,
        stride_s=stride_s,
        max_bytes=None if job else s.max_upload_bytes,
        max_duration_s=s.max_duration_s if job else min(s.max_duration_s, s.embed_max_duration_s),
        max_pixels=s.max_pixels,
        time_budget_s=s.job_decode_timeout_s if job else s.decode_timeout_s,
        max_gap_s=s.max_gap_s,
        require_audio=s.require_audio,
        require_video=s.require_video,
        max_windows=s.job_max_windows if job else s.max_windows_per_request,
        decoder=state.video_decoder,
        skip_windows=skip_windows,
    )


def _over_sync_limit(state: AppState, e: MediaRejected, hint: str) -> MediaRejected:
    """A synchronous request over its length or window limit, with ``hint`` (what to do)."""
    s = state.settings
    if e.code == "too_long" and s.embed_max_duration_s < s.max_duration_s:
        return MediaRejected(
            "too_long",
            f"the upload lasts longer than {s.embed_max_duration_s:g} s, the limit for a "
            f"synchronous request (PEMT_EMBED_MAX_DURATION_S); {hint}",
        )
    if e.code == "too_many_windows":
        return MediaRejected(e.code, f"{e.message}; {hint}")
    return e


async def embed_upload(
    state: AppState,
    upload: Upload,
    *,
    window_segments: int | None = None,
    stride: float | None = None,
    too_long_hint: str = "send a shorter clip",
) -> Embedded:
    """Decode the upload in a child process and embed it batch by batch as windows arrive;
    only the vectors, window times and JPEG thumbnails are kept (see server.core.decode).
    ``window_segments`` and ``stride`` as ``windowing`` returned and checked them. An upload
    over the synchronous limits is 413 with ``too_long_hint`` in the message."""
    assert upload.path is not None
    if upload.size == 0:
        state.metrics.media_errors.labels("empty").inc()
        raise MediaRejected("empty", "the uploaded file is empty (0 bytes); send a video file")
    req = decode_request(state, str(upload.path), window_segments, stride)
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
        raise _over_sync_limit(state, e, too_long_hint) from None
    decode_s = time.perf_counter() - t0 - model_s  # waiting for the child's windows
    state.metrics.observe_stage("decode", decode_s)
    state.metrics.observe_stage("model", model_s)
    vectors = {m: np.concatenate(p) for m, p in parts.items()}
    return Embedded(windows, vectors, thumbnails, {"decode": decode_s, "model": model_s})


def clip_item_ids(index: Any, clip_id: str) -> list[str]:
    """Ids of every stored item (window) of a clip; blocking (run it in the index pool)."""
    ids: list[str] = []
    while True:  # by cursor: each page costs its own size, not the clip's
        page = index.list(0, 10_000, clip_id=clip_id, after=ids[-1] if ids else None)
        ids += [it.id for it in page]
        if len(page) < 10_000:
            return ids


def clip_summary(
    index: Any, clip_id: str, *, with_vectors: bool = False
) -> tuple[Any, list[str]] | None:
    """A clip as one item (``server.index.Item``) built from its windows, and the windows'
    ids; None when no window has this clip id. Blocking.

    ``start``/``end`` span the windows, ``modalities`` and ``has_thumbnail`` are their union,
    metadata is the user's plus ``clip_id``, ``has_audio``, ``has_video`` (any window);
    ``vectors`` (on request) per modality the normalized mean of the windows' vectors, the
    same query an upload of the clip gives."""
    ids = clip_item_ids(index, clip_id)
    items = [it for it in (index.get(i, with_vectors=with_vectors) for i in ids) if it]
    if not items:
        return None
    meta = {k: v for k, v in items[0].metadata.items() if k not in RESERVED_METADATA}
    meta["clip_id"] = clip_id
    meta["has_audio"] = any(it.metadata.get("has_audio") for it in items)
    meta["has_video"] = any(it.metadata.get("has_video") for it in items)
    order = {m: i for i, m in enumerate(MODALITIES)}
    modalities = sorted({m for it in items for m in it.modalities}, key=lambda m: order.get(m, 9))
    vectors = None
    if with_vectors:
        vectors = {}
        for m in modalities:
            v = np.mean([it.vectors[m] for it in items if m in (it.vectors or {})], axis=0)
            n = float(np.linalg.norm(v))
            if math.isfinite(n) and n > 0:
                vectors[m] = (v / n).astype(np.float32)
    starts = [it.start for it in items if it.start is not None]
    ends = [it.end for it in items if it.end is not None]
    summary = dataclasses.replace(
        items[0],
        id=clip_id,
        clip_id=clip_id,
        start=min(starts) if starts else None,
        end=max(ends) if ends else None,
        metadata=meta,
        modalities=tuple(modalities),
        has_thumbnail=any(it.has_thumbnail for it in items),
        created_at=min(it.created_at for it in items),
        updated_at=max(it.updated_at for it in items),
        vectors=vectors,
    )
    return summary, [it.id for it in items]


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
        raise Unprocessable(
            f"the upload has no usable {modality} signal to search with; use another modality "
            "or another file",
            code="no_signal",
        )
    return (v / n).astype(np.float32)


def query_vectors(emb: Embedded) -> dict[str, np.ndarray]:
    """Every query an upload gives (``modality="best"``): per modality, :func:`query_vector`;
    ``audio`` only when a window has sound, ``visual`` only when one has a picture, as the
    stored windows of the file would have. A stream without usable signal is left out."""
    present = {
        "fused": True,
        "audio": any(w.has_audio for w in emb.windows),
        "visual": any(w.has_video for w in emb.windows),
    }
    out: dict[str, np.ndarray] = {}
    for m in MODALITIES:
        if present[m]:
            with contextlib.suppress(Unprocessable):
                out[m] = query_vector(emb, m)
    if not out:
        raise Unprocessable(
            "the upload has no usable signal to search with; use another file",
            code="no_signal",
        )
    return out
