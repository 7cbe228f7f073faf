"""The ``spread`` layout: AVBERT's test-time sampling, one window whose segments cover the video.

AVBERT evaluates a video (``data/kinetics_sounds.py``, test mode) as one sequence of
``S = num_segments`` segments spread evenly over the whole video. With ``video_fps`` the file's
frame rate rounded, a segment spans ``W = frames_per_segment * video_fps / fps`` source frames
(AVBERT: ``NUM_FRAMES * SAMPLING_RATE * video_fps / TARGET_FPS``, 64 frames = 2.13 s at 30 fps):

- segment ``i`` starts at frame ``delta * i / (S - 1)``, ``delta = max(n_frames - W, 0)``; its
  frames are ``linspace(start, start + W - 1, F)`` in float32, clamped to the video, truncated;
- its audio is the ``audio_samples_per_segment`` samples from
  ``int(audio_delta * start / delta)``, ``audio_delta = max(n_samples - size, 0)`` (fewer where
  the audio ends), made into a log-mel by ``pemt.media.log_mel``.

Where AVBERT divides by zero (a video shorter than one segment, ``delta = 0``, or ``S = 1``) we
start every segment at frame 0 and sample 0. Worked examples from AVBERT's own code:
``tests/data/avbert-golden/frontend/sampling.json`` (``tests/test_media_spread.py``).

Decoding takes two passes over the file: the first counts video frames (packets, no decoding
unless the container says the count) and decodes the audio track, the second decodes the video
and keeps the chosen frames. The audio of the whole file is held in memory, so the spread
layout refuses files longer than ``SPREAD_MAX_SECONDS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from pemt.config import MediaConfig
from pemt.media._audio import log_mel
from pemt.media._decode import (
    _DECODE_ERRORS,
    DecodeLimits,
    Source,
    _Converter,
    _Opened,
    _reason,
)
from pemt.media._errors import (
    CorruptMediaError,
    EmptyMediaError,
    LimitError,
    MissingModalityError,
)

__all__ = ["SPREAD_MAX_SECONDS", "SegmentPlan", "load_spread_window", "spread_plan"]

SPREAD_MAX_SECONDS = 1200.0  # 20 min of mono float32 audio at 44.1 kHz is 212 MB


@dataclass(frozen=True)
class SegmentPlan:
    """Where one segment of the spread layout comes from: source frame indices (F,) and the
    sample range ``[audio_start, audio_stop)`` at ``sample_rate``."""

    start: float  # AVBERT's start_idx (a frame position, not rounded)
    frames: tuple[int, ...]
    audio_start: int
    audio_stop: int


def spread_plan(n_frames: int, fps: float, n_samples: int, cfg: MediaConfig) -> list[SegmentPlan]:
    """AVBERT's test-time rule for a video of ``n_frames`` frames at ``fps`` with ``n_samples``
    audio samples at ``cfg.sample_rate`` (either may be 0: that modality is absent)."""
    s, f = cfg.num_segments, cfg.frames_per_segment
    window = f * round(fps) / cfg.fps if fps > 0 else 0.0  # source frames per segment (float)
    delta = max(n_frames - window, 0.0)
    size = cfg.audio_samples_per_segment
    audio_delta = max(n_samples - size, 0)
    plans = []
    for i in range(s):
        start = delta * i / (s - 1) if s > 1 and delta > 0 else 0.0
        if n_frames > 0:
            pos = np.linspace(start, start + window - 1, f).astype(np.float32)  # torch.linspace
            idx = np.clip(pos, 0, n_frames - 1).astype(np.int64)  # clamp, then .long()
            frames = tuple(int(j) for j in idx)
        else:
            frames = ()
        a0 = int(audio_delta * (start / delta)) if delta > 0 else 0
        plans.append(SegmentPlan(start, frames, a0, min(a0 + size, n_samples)))
    return plans


def _check_rereadable(source: Source) -> None:
    """Paths and bytes can be read twice; a file object must be seekable."""
    if hasattr(source, "read") and not source.seekable():  # type: ignore[union-attr]
        raise ValueError(
            "the spread layout reads a file twice; pass a path, bytes or a seekable file"
        )


def load_spread_window(
    source: Source,
    cfg: MediaConfig,
    limits: DecodeLimits | None = None,
    *,
    require_audio: bool = False,
    require_video: bool = False,
):  # -> Window (imported lazily: _windows imports this module)
    """One :class:`pemt.media.Window` whose ``num_segments`` segments follow :func:`spread_plan`."""
    from pemt.media._windows import Window, _spectrogram_thumbnail

    limits = limits or DecodeLimits()
    _check_rereadable(source)
    pos = source.tell() if hasattr(source, "tell") else None  # type: ignore[union-attr]
    n_frames, fps, samples, duration, sar, name = _first_pass(
        source, cfg, limits, require_audio, require_video
    )
    if pos is not None:
        source.seek(pos)  # type: ignore[union-attr]
    plans = spread_plan(n_frames, fps, len(samples), cfg)
    t, f, size = cfg.num_segments, cfg.frames_per_segment, cfg.image_size
    frames = np.zeros((t, f, size, size, 3), np.uint8)
    thumb = None
    if n_frames:
        frames, thumb = _second_pass(source, cfg, limits, plans, sar, name)
    audio = np.zeros((t, cfg.n_mels, cfg.audio_frames), np.float32)
    if len(samples):
        for i, p in enumerate(plans):
            audio[i] = log_mel(samples[p.audio_start : p.audio_stop], cfg)
    vmask = np.full(t, n_frames > 0)
    amask = np.full(t, len(samples) > 0)
    if thumb is None:
        thumb = _spectrogram_thumbnail(audio, amask)
    return Window(
        index=0,
        start=0.0,
        end=round(duration, 6),
        frames=frames,
        audio=audio,
        visual_mask=vmask,
        audio_mask=amask,
        has_video=bool(n_frames),
        has_audio=bool(len(samples)),
        thumbnail=thumb,
    )


def _first_pass(
    source: Source, cfg: MediaConfig, limits: DecodeLimits, require_audio: bool, require_video: bool
) -> tuple[int, float, np.ndarray, float, object, str]:
    """Count the video frames, decode the audio; (n_frames, fps, samples, duration, sar, name)."""
    o = _Opened(source, limits)
    try:
        for flag, present, what in (
            (require_video, o.video, "video"),
            (require_audio, o.audio, "audio"),
        ):
            if flag and present is None:
                raise MissingModalityError(
                    f"{o.name} has no {what} stream but a {what} track is required; "
                    f"send a file with a {what} track",
                    code=f"missing_{what}",
                )
        if o.duration is not None and o.duration > SPREAD_MAX_SECONDS:
            raise LimitError(
                f"{o.name} lasts {o.duration:.0f} s; the spread layout holds a whole video's "
                f"audio and takes at most {SPREAD_MAX_SECONDS:.0f} s: use the contiguous layout",
                code="too_long",
            )
        fps, sar = 0.0, None
        if o.video is not None:
            rate = o.video.average_rate or o.video.guessed_rate or o.video.base_rate
            fps, sar = (float(rate) if rate else 0.0), o.video.sample_aspect_ratio
        resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.sample_rate)
        chunks: list[np.ndarray] = []
        total, n_frames = 0, 0
        streams = [s for s in (o.video, o.audio) if s is not None]
        try:
            for packet in o.container.demux(*streams):
                o.budget.check()
                if packet.stream is o.video:
                    n_frames += packet.size > 0  # a frame per packet; the flush packet is empty
                    continue
                for frame in packet.decode():
                    if not isinstance(frame, av.AudioFrame):
                        continue
                    try:
                        outs = resampler.resample(frame)
                    except ValueError:  # the input format changed mid-stream: a new resampler
                        outs = resampler.resample(None)
                        resampler = av.AudioResampler(
                            format="flt", layout="mono", rate=cfg.sample_rate
                        )
                        outs += resampler.resample(frame)
                    for out in outs:
                        chunks.append(out.to_ndarray().reshape(-1))
                        total += len(chunks[-1])
                if total > SPREAD_MAX_SECONDS * cfg.sample_rate:
                    raise LimitError(
                        f"{o.name} has more than {SPREAD_MAX_SECONDS:.0f} s of audio; use the "
                        "contiguous layout",
                        code="too_long",
                    )
            if o.audio is not None:
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except _DECODE_ERRORS as e:
            raise CorruptMediaError(
                f"{o.name} cannot be decoded ({_reason(e)}); the file is damaged or truncated: "
                "re-export or re-upload it"
            ) from None
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if not n_frames and not len(samples):
            raise EmptyMediaError(
                f"{o.name} has streams but no frames or samples; send a file with content"
            )
        duration = max(n_frames / fps if fps else 0.0, len(samples) / cfg.sample_rate)
        return n_frames, fps, samples, duration, sar, o.name
    finally:
        o.close()


def _second_pass(
    source: Source,
    cfg: MediaConfig,
    limits: DecodeLimits,
    plans: list[SegmentPlan],
    sar: object,
    name: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode the video and keep the planned frames: (frames (T, F, S, S, 3), thumbnail)."""
    wanted: dict[int, list[tuple[int, int]]] = {}
    for i, p in enumerate(plans):
        for j, idx in enumerate(p.frames):
            wanted.setdefault(idx, []).append((i, j))
    t, f, size = cfg.num_segments, cfg.frames_per_segment, cfg.image_size
    out = np.zeros((t, f, size, size, 3), np.uint8)
    filled = np.zeros((t, f), bool)
    middle = (t // 2, f // 2)
    thumb = None
    conv = _Converter(size, sar)  # type: ignore[arg-type]
    o = _Opened(source, limits)
    last = None
    try:
        assert o.video is not None
        index = 0
        for packet in o.container.demux(o.video):
            o.budget.check()
            for frame in packet.decode():
                if index in wanted:
                    rgb = conv.crop(frame)
                    for i, j in wanted[index]:
                        out[i, j], filled[i, j] = rgb, True
                        if (i, j) == middle:
                            thumb = conv.thumbnail(frame)
                last = frame
                index += 1
    except _DECODE_ERRORS as e:
        raise CorruptMediaError(
            f"{name} cannot be decoded ({_reason(e)}); re-export or re-upload it"
        ) from None
    finally:
        if last is not None and not filled.all():  # fewer frames than packets: hold the last one
            rgb = conv.crop(last)
            out[~filled] = rgb
            if thumb is None:
                thumb = conv.thumbnail(last)
        o.close()
    return out, thumb
