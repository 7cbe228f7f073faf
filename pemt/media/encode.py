"""Write real encoded test media with PyAV: a moving pattern with a time code, plus a tone.

Torch-free and public: the server, training, Triton and browser tests all make their media here.

The picture (display orientation, ``height x width``) at time ``t`` seconds:

- top half: one flat colour that is a time code. Red is the fine part,
  ``16 + 224 * frac(t / 2)``, blue the coarse part, ``16 + 224 * frac(t / PERIOD_S)``;
  :func:`pattern_time` reads them back to about +-0.03 s. Green is set by ``pattern``.
- bottom half: dark blue with a white square that crosses left to right every 2 s.

The sound is a sine tone at ``tone_hz`` (amplitude 0.5) on every channel.

Example::

    make_test_video(tmp / "clip.mp4", seconds=3, width=160, height=120)            # H.264 + AAC
    make_test_video(tmp / "clip.webm", seconds=2, width=96, height=64,
                    video_codec="vp9", audio_codec="opus")
    make_test_video(tmp / "phone.mp4", seconds=2, width=72, height=128, rotation=-90)  # portrait
    make_test_video(tmp / "silent.mp4", seconds=2, width=64, height=48, audio_codec=None)
    make_test_video(tmp / "voice.m4a", seconds=2, width=0, height=0, video_codec=None)
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

__all__ = [
    "PERIOD_S",
    "make_sparse_video",
    "make_test_video",
    "pattern_frame",
    "pattern_green",
    "pattern_time",
]

PERIOD_S = 32.0  # the time code wraps around every PERIOD_S seconds
_FINE_S = 2.0  # period of the fine (red) part of the time code

# short names -> FFmpeg encoder names
_VIDEO_CODECS = {"h264": "libx264", "vp9": "libvpx-vp9", "mpeg4": "mpeg4", "mpeg1": "mpeg1video"}
_AUDIO_CODECS = {"aac": "aac", "opus": "libopus", "mp2": "mp2", "pcm": "pcm_s16le"}
_AUDIO_FRAME = {"aac": 1024, "libopus": 960, "mp2": 1152}
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}
_VIDEO_OPTIONS = {
    "libx264": {"crf": "16", "preset": "veryfast"},
    "libvpx-vp9": {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    # intra only: P-frames of these encoders skip the slow colour change of the time code
    "mpeg4": {"qscale": "2", "g": "1"},
    "mpeg1video": {"qscale": "2", "g": "1"},
}


def pattern_green(pattern: int) -> int:
    """Green level of the top half for ``pattern`` (lets tests tell clips apart)."""
    return 40 + (int(pattern) * 53) % 176


def _level(t: float, period: float) -> int:
    return round(16.0 + 224.0 * ((t / period) % 1.0))


def pattern_frame(t: float, width: int, height: int, pattern: int = 0) -> np.ndarray:
    """The picture at ``t`` seconds, uint8 RGB ``(height, width, 3)``, display orientation."""
    img = np.empty((height, width, 3), np.uint8)
    top = height // 2
    img[:top] = (_level(t, _FINE_S), pattern_green(pattern), _level(t, PERIOD_S))
    img[top:] = (0, 0, 64)
    size = max(2, height // 4)
    x = round(((t / 2.0) % 1.0) * max(0, width - size))
    y = top + (height - top - size) // 2
    img[y : y + size, x : x + size] = 255
    return img


def pattern_time(rgb: np.ndarray) -> float:
    """Read the time code (seconds modulo PERIOD_S) from a decoded frame ``(H, W, 3)``.

    Uses the middle of the top half, so it survives resizing and centre cropping.
    """
    h, w = rgb.shape[:2]
    patch = rgb[max(0, h // 8) : max(1, 3 * h // 8), w // 4 : max(w // 4 + 1, 3 * w // 4)]
    red, _, blue = patch.reshape(-1, 3).astype(np.float64).mean(axis=0)
    fine = (red - 16.0) / 224.0 * _FINE_S
    coarse = (blue - 16.0) / 224.0 * PERIOD_S
    return fine + _FINE_S * round((coarse - fine) / _FINE_S)  # about -0.03 just after 0


def _frame_times(seconds: float, fps: int, vfr: bool) -> list[float]:
    if not vfr:
        return [i / fps for i in range(round(seconds * fps))]
    # variable frame rate: even seconds at 2*fps, odd seconds at fps/2
    times: list[float] = []
    t = 0.0
    while t < seconds - 1e-9:
        times.append(t)
        t += 1.0 / (2 * fps) if int(t + 1e-9) % 2 == 0 else 2.0 / fps
    return times


def make_test_video(
    path: str | Path,
    *,
    seconds: float,
    width: int,
    height: int,
    fps: int = 25,
    video_codec: str | None = "h264",
    audio_codec: str | None = "aac",
    sample_rate: int = 48000,
    channels: int = 2,
    rotation: int | None = None,
    vfr: bool = False,
    pattern: int = 0,
    tone_hz: float = 440.0,
) -> Path:
    """Encode a real media file at ``path``; the container comes from the suffix.

    ``width x height`` is the display size. ``rotation`` (degrees counter-clockwise, PyAV's
    ``VideoFrame.rotation`` convention; a portrait phone clip is usually -90) stores the
    picture rotated the other way plus display-matrix metadata, as a phone does: a decoder that
    honours the metadata sees the upright ``width x height`` pattern. ``vfr=True`` writes
    variable-frame-rate timestamps (even seconds at ``2*fps``, odd ones at ``fps/2``).
    ``video_codec``: ``h264``, ``vp9``, ``mpeg4``, ``mpeg1`` or None; ``audio_codec``: ``aac``,
    ``opus``, ``mp2``, ``pcm`` or None. Returns the path.
    """
    path = Path(path)
    if video_codec is None and audio_codec is None:
        raise ValueError("make_test_video needs video_codec or audio_codec (or both)")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if video_codec is not None and video_codec not in _VIDEO_CODECS:
        raise ValueError(
            f"video_codec={video_codec!r} is not one of {sorted(_VIDEO_CODECS)} or None"
        )
    if audio_codec is not None and audio_codec not in _AUDIO_CODECS:
        raise ValueError(
            f"audio_codec={audio_codec!r} is not one of {sorted(_AUDIO_CODECS)} or None"
        )
    if audio_codec is not None and channels not in _LAYOUTS:
        raise ValueError(f"channels={channels} is not one of {sorted(_LAYOUTS)}")
    if audio_codec == "opus" and sample_rate not in (8000, 12000, 16000, 24000, 48000):
        raise ValueError(
            f"opus needs sample_rate in 8000/12000/16000/24000/48000, got {sample_rate}"
        )
    rot = int(rotation or 0)
    if rot % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    k = (rot // 90) % 4
    coded_w, coded_h = (height, width) if k % 2 else (width, height)
    if video_codec is not None and (coded_w % 2 or coded_h % 2 or coded_w <= 0 or coded_h <= 0):
        raise ValueError(f"width and height must be positive and even, got {width}x{height}")

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vstream: VideoStream | None = None
        astream: AudioStream | None = None
        if video_codec is not None:
            vname = _VIDEO_CODECS[video_codec]
            vstream = cast(VideoStream, out.add_stream(vname, rate=fps))
            vstream.width, vstream.height = coded_w, coded_h
            vstream.pix_fmt = "yuv420p"
            vstream.options = dict(_VIDEO_OPTIONS.get(vname, {}))
            if vfr:
                tb = Fraction(1, 1000)
                vstream.time_base = tb
                vstream.codec_context.time_base = tb
            if rot:
                vstream.set_display_rotation(rot)
        if audio_codec is not None:
            aname = _AUDIO_CODECS[audio_codec]
            astream = cast(
                AudioStream, out.add_stream(aname, rate=sample_rate, layout=_LAYOUTS[channels])
            )
            resampler = av.AudioResampler(
                format=astream.codec_context.format.name,
                layout=_LAYOUTS[channels],
                rate=sample_rate,
                frame_size=_AUDIO_FRAME.get(aname, 1024),
            )

        # one second at a time so the muxer interleaves the streams
        times = _frame_times(seconds, fps, vfr) if vstream is not None else []
        n_samples = round(seconds * sample_rate)
        fi = 0
        for sec in range(int(np.ceil(seconds))):
            if vstream is not None:
                while fi < len(times) and times[fi] < sec + 1 - 1e-9:
                    img = pattern_frame(times[fi], width, height, pattern)
                    if k:
                        img = np.ascontiguousarray(np.rot90(img, -k))
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    frame = frame.reformat(format="yuv420p")
                    frame.pts = round(times[fi] * 1000) if vfr else fi
                    out.mux(vstream.encode(frame))
                    fi += 1
            if astream is not None:
                s0, s1 = sec * sample_rate, min(n_samples, (sec + 1) * sample_rate)
                if s1 > s0:
                    tt = np.arange(s0, s1) / sample_rate
                    tone = (0.5 * np.sin(2 * np.pi * tone_hz * tt)).astype(np.float32)
                    planes = np.ascontiguousarray(np.repeat(tone[None], channels, axis=0))
                    aframe = av.AudioFrame.from_ndarray(
                        planes, format="fltp", layout=_LAYOUTS[channels]
                    )
                    aframe.sample_rate = sample_rate
                    aframe.pts = s0
                    aframe.time_base = Fraction(1, sample_rate)
                    for f in resampler.resample(aframe):
                        out.mux(astream.encode(f))
        if astream is not None:
            for f in resampler.resample(None):
                out.mux(astream.encode(f))
            out.mux(astream.encode(None))
        if vstream is not None:
            out.mux(vstream.encode(None))
    return path


def make_sparse_video(
    path: str | Path,
    frame_times: list[float],
    *,
    width: int = 16,
    height: int = 16,
    last_duration: float | None = None,
    audio_at: float | None = None,
    audio_seconds: float = 1.0,
) -> Path:
    """Encode an H.264 MP4 whose frames sit at ``frame_times`` (seconds, increasing), however
    far apart: the timestamps are written as given (millisecond time base), so a few tiny frames
    can claim a long duration. ``last_duration`` (seconds) is what the container states for the
    last frame; ``audio_at`` adds ``audio_seconds`` of 8 kHz AAC tone starting at that time (no
    audio otherwise). Used to test how decoders treat gaps. Returns the path."""
    path = Path(path)
    if not frame_times or any(b <= a for a, b in zip(frame_times, frame_times[1:], strict=False)):
        raise ValueError(f"frame_times must be non-empty and increasing, got {frame_times}")
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive and even, got {width}x{height}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tb = Fraction(1, 1000)
    rate = 8000
    with av.open(str(path), "w") as out:
        vstream = cast(VideoStream, out.add_stream("libx264", rate=25))
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.time_base = vstream.codec_context.time_base = tb
        # no B-frames: the last packet decoded is the last shown, and carries last_duration
        vstream.options = {**_VIDEO_OPTIONS["libx264"], "bf": "0"}
        astream = None
        if audio_at is not None:
            astream = cast(AudioStream, out.add_stream("aac", rate=rate, layout="mono"))
        packets = []
        for i, t in enumerate(frame_times):
            img = pattern_frame(t, width, height, pattern=i)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = round(t * 1000)
            packets += vstream.encode(frame)
        packets += vstream.encode(None)
        if last_duration is not None:
            packets[-1].duration = round(last_duration * 1000)
        out.mux(packets)
        if astream is not None and audio_at is not None:
            start = round(audio_at * rate)
            for k in range(0, round(audio_seconds * rate), 1024):
                tone = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(k, k + 1024) / rate)
                aframe = av.AudioFrame.from_ndarray(
                    tone.astype(np.float32)[None], format="fltp", layout="mono"
                )
                aframe.sample_rate, aframe.pts = rate, start + k
                aframe.time_base = Fraction(1, rate)
                out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))
    return path
