"""Segments -> model windows of ``num_segments`` segments, padded with masks or overlapping."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pemt.config import MediaConfig
from pemt.media._audio import check_media_config
from pemt.media._decode import THUMBNAIL_SIZE, DecodeLimits, Segment, SegmentStream, Source
from pemt.media._select import log, open_segments, resolve_decoder
from pemt.spec import window_inputs

__all__ = ["Window", "batch_windows", "iter_windows", "load_windows"]


@dataclass
class Window:
    """One model input row: ``T = num_segments`` segments starting at ``start`` seconds.

    frames uint8 (T, F, S, S, 3); audio float32 log-mel (T, n_mels, A); masks bool (T,), True
    where the segment holds real data. ``end`` is where the real content of the window ends.
    ``has_video`` / ``has_audio`` say whether the file has that modality at all.
    ``thumbnail`` is uint8 (H, W, 3), the window's middle frame with short side 160 px (a
    grey log-mel picture for audio-only files). ``decoder`` is the backend that decoded the
    video: ``"cpu"`` (PyAV) or ``"nvdec"``; with NVDEC and ``device_frames``, ``frames`` is a
    CUDA uint8 tensor of the same shape.
    """

    index: int
    start: float
    end: float
    frames: np.ndarray
    audio: np.ndarray
    visual_mask: np.ndarray
    audio_mask: np.ndarray
    has_video: bool
    has_audio: bool
    thumbnail: np.ndarray
    decoder: str = "cpu"


def _stride_segments(cfg: MediaConfig, stride_s: float | None) -> int:
    if stride_s is None:
        return max(1, cfg.num_segments // 2)
    k = stride_s / cfg.segment_seconds
    if stride_s <= 0 or abs(k - round(k)) > 1e-6:
        raise ValueError(
            f"stride_s={stride_s} must be a positive multiple of segment_seconds="
            f"{cfg.segment_seconds:g}, e.g. {cfg.window_seconds / 2:g} (half a window)"
        )
    return int(round(k))


def _spectrogram_thumbnail(audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A grey picture of the window's log-mel (low frequencies at the bottom)."""
    h, w = THUMBNAIL_SIZE, THUMBNAIL_SIZE * 16 // 9
    real = audio[mask] if mask.any() else audio[:1]  # (t, n_mels, A)
    spec = np.concatenate(list(real), axis=1)[::-1]  # (n_mels, t * A), high frequencies on top
    lo, hi = float(spec.min()), float(spec.max())
    grey = ((spec - lo) / (hi - lo) * 255.0) if hi > lo else np.zeros_like(spec)
    rows = np.arange(h) * spec.shape[0] // h
    cols = np.arange(w) * spec.shape[1] // w
    img = grey[rows[:, None], cols[None, :]].astype(np.uint8)  # (h, w)
    return np.repeat(img[:, :, None], 3, axis=2)


def _window(
    index: int,
    first: int,
    segs: Sequence[Segment],
    cfg: MediaConfig,
    end_time: float | None,
    stream: SegmentStream,
) -> Window:
    t, f, s = cfg.num_segments, cfg.frames_per_segment, cfg.image_size
    a = cfg.audio_frames_per_segment
    assert 0 < len(segs) <= t, len(segs)
    frames = stream.conv.new_frames((t, f, s, s, 3))  # numpy, or a device tensor (NVDEC)
    audio = np.zeros((t, cfg.n_mels, a), np.float32)
    vmask = np.zeros(t, bool)
    amask = np.zeros(t, bool)
    thumbs = []
    for j, seg in enumerate(segs):
        if seg.video is not None:
            frames[j] = seg.video
            vmask[j] = True
        if seg.audio is not None:
            audio[j] = seg.audio
            amask[j] = True
        if seg.thumb is not None:
            thumbs.append(seg.thumb)
    start = first * cfg.segment_seconds
    end = start + len(segs) * cfg.segment_seconds
    if end_time is not None and end_time > start:
        end = min(start + cfg.window_seconds, end_time)
    thumb = thumbs[len(thumbs) // 2] if thumbs else _spectrogram_thumbnail(audio, amask)
    return Window(
        index=index,
        start=round(start, 6),
        end=round(end, 6),
        frames=frames,
        audio=audio,
        visual_mask=vmask,
        audio_mask=amask,
        has_video=stream.has_video,
        has_audio=stream.has_audio,
        thumbnail=thumb,
        decoder=getattr(stream, "backend", "cpu"),
    )


def _windows(stream: SegmentStream, cfg: MediaConfig, stride: int) -> Iterator[Window]:
    t = cfg.num_segments
    buf: deque[Segment] = deque(maxlen=t)  # the last T segments
    n = 0
    index = 0
    next_start = 0
    last_start: int | None = None
    for seg in stream:
        buf.append(seg)
        n += 1
        if n == next_start + t:  # buf holds segments [next_start, n)
            end_time = stream.end_time if stream.finished else None
            yield _window(index, next_start, list(buf), cfg, end_time, stream)
            index += 1
            last_start, next_start = next_start, next_start + stride
    if last_start is None:  # shorter than one window: pad
        yield _window(index, 0, list(buf), cfg, stream.end_time, stream)
    elif last_start + t < n:  # the last window ends where the clip ends
        yield _window(index, n - t, list(buf), cfg, stream.end_time, stream)


def iter_windows(
    source: Source,
    media_cfg: MediaConfig,
    *,
    stride_s: float | None = None,
    limits: DecodeLimits | None = None,
    require_audio: bool = False,
    require_video: bool = False,
    decoder: str | None = None,
    device_frames: bool = False,
) -> Iterator[Window]:
    """Decode ``source`` (a path, bytes or a binary file object) into model windows, streaming.

    Contiguous layout: a clip shorter than ``media_cfg.window_seconds`` gives one window padded
    with masks; a longer one gives windows every ``stride_s`` seconds (default: half a window;
    a whole number of segments), plus a last window that ends where the clip ends. Spread layout
    (``pemt.media.spread_plan``): one window, decoded when this is called. The file is opened and
    checked now (bad input raises a :class:`MediaError` here); decoding happens as you iterate
    and may still raise one (damaged data, time budget, duration limit).

    ``decoder``: ``auto`` | ``cpu`` | ``nvdec`` (None: ``$PEMT_DECODER``, default ``auto``);
    see ``pemt.media._select``. ``device_frames``: keep NVDEC-decoded frames on the GPU.
    """
    check_media_config(media_cfg)
    if media_cfg.layout == "spread":  # one window over the whole video (AVBERT's test rule)
        if stride_s is not None:
            raise ValueError(
                "the spread layout makes one window per video; stride_s does not apply"
            )
        from pemt.media._spread import load_spread_window

        if resolve_decoder(decoder) == "nvdec":  # checks the setting; spread is PyAV's
            log.info("the spread layout decodes with PyAV (two passes over the file)")

        window = load_spread_window(
            source, media_cfg, limits, require_audio=require_audio, require_video=require_video
        )
        return iter([window])
    stride = _stride_segments(media_cfg, stride_s)
    stream = open_segments(
        source,
        media_cfg,
        limits,
        require_audio=require_audio,
        require_video=require_video,
        decoder=decoder,
        device_frames=device_frames,
    )
    return _windows(stream, media_cfg, stride)


def load_windows(
    source: Source,
    media_cfg: MediaConfig,
    *,
    stride_s: float | None = None,
    limits: DecodeLimits | None = None,
    require_audio: bool = False,
    require_video: bool = False,
    decoder: str | None = None,
    device_frames: bool = False,
) -> list[Window]:
    """:func:`iter_windows` as a list."""
    return list(
        iter_windows(
            source,
            media_cfg,
            stride_s=stride_s,
            limits=limits,
            require_audio=require_audio,
            require_video=require_video,
            decoder=decoder,
            device_frames=device_frames,
        )
    )


def batch_windows(
    windows: Sequence[Window], media_cfg: MediaConfig | None = None
) -> dict[str, np.ndarray]:
    """Stack windows into model inputs keyed by :func:`pemt.spec.model_inputs` names.

    With ``media_cfg`` the arrays are checked against the spec of that config; without it,
    the windows are checked against each other and against the spec's names and dtypes.
    """
    if not windows:
        raise ValueError("batch_windows needs at least one window")
    names = ("frames", "audio", "visual_mask", "audio_mask")
    shapes = {(name, getattr(w, name).shape) for w in windows for name in names}
    if len(shapes) != len(names):
        raise ValueError(
            "windows have different shapes; batch only windows decoded with one MediaConfig"
        )
    arrays = {name: np.stack([getattr(w, name) for w in windows]) for name in names}
    for spec in window_inputs(media_cfg or MediaConfig()):
        arr = arrays[spec.name]
        if media_cfg is not None:
            spec.check(arr)
        elif arr.dtype != spec.np_dtype or arr.ndim != len(spec.shape) + 1:
            raise ValueError(
                f"{spec.name}: dtype {arr.dtype} with {arr.ndim - 1} axes, expected "
                f"{spec.dtype} with {len(spec.shape)} axes (after the batch axis)"
            )
    return arrays
