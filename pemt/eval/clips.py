"""Clips in memory, real files out: decode, edit a whole clip as a person would, encode.

A :class:`Clip` is a decoded video (uint8 RGB frames at their frame rate, short side at most
``max_short`` pixels) with its mono sound. :data:`TRANSFORMS` names every edit of the
near-duplicate evaluation, one family at two strengths; :func:`transform` applies one with the
picture and sound edits of :mod:`pemt.edits` and says how to encode the result, and
:func:`write_clip` encodes it with PyAV (H.264, MPEG-4 Part 2 or VP9; AAC). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from pemt import edits

__all__ = [
    "FAMILIES",
    "STRENGTHS",
    "TRANSFORMS",
    "Clip",
    "Encoding",
    "Transform",
    "decode_clip",
    "transform",
    "write_clip",
]

STRENGTHS = ("mild", "strong")


@dataclass
class Clip:
    frames: np.ndarray  # uint8 (N, H, W, 3)
    fps: float
    audio: np.ndarray | None  # float32 (n,) mono in [-1, 1], or None (silent file)
    sample_rate: int = 48000

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


@dataclass(frozen=True)
class Encoding:
    """How :func:`write_clip` encodes: codec, quality (crf) or bit rate, audio bit rate/rate."""

    video_codec: str = "h264"  # h264 | mpeg4 | vp9
    crf: int | None = 23
    video_bitrate: int | None = None  # bits/s; replaces crf
    audio_bitrate: int = 128_000
    audio_rate: int | None = None  # resample the sound to this rate before encoding
    suffix: str = ".mp4"


def _even(n: int) -> int:
    return max(2, n - n % 2)


def decode_clip(
    path: str | Path, *, start: float = 0.0, end: float | None = None, max_short: int = 240
) -> Clip:
    """Decode ``path`` from ``start`` to ``end`` seconds: frames with the short side scaled
    down to ``max_short`` (even sizes), sound as mono float32 at the file's rate (at most 48 kHz)."""
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate or 25)
        w, h = vs.codec_context.width, vs.codec_context.height
        scale = min(1.0, max_short / min(w, h))
        ow, oh = _even(round(w * scale)), _even(round(h * scale))
        rate = 48000
        if c.streams.audio:
            rate = min(48000, c.streams.audio[0].codec_context.sample_rate or 48000)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        streams = [vs, *c.streams.audio[:1]]
        for frame in c.decode(*streams):
            if not isinstance(frame, av.VideoFrame | av.AudioFrame):
                continue
            t = float(frame.time or 0.0)
            if isinstance(frame, av.VideoFrame):
                if t + 1e-6 >= start and (end is None or t < end - 1e-6):
                    frames.append(frame.to_ndarray(format="rgb24", width=ow, height=oh))
            elif isinstance(frame, av.AudioFrame):
                for r in resampler.resample(frame):
                    audio.append(r.to_ndarray()[0])
    if not frames:
        raise ValueError(f"{path}: no video frames between {start} and {end} s")
    sound = None
    if audio:
        wave = np.concatenate(audio).astype(np.float32)
        s0 = int(round(start * rate))
        s1 = len(wave) if end is None else int(round(end * rate))
        sound = wave[s0:s1] if s1 > s0 else None
    return Clip(np.stack(frames), fps, sound, rate)


def write_clip(clip: Clip, path: str | Path, enc: Encoding | None = None) -> Path:
    """Encode ``clip`` to ``path`` (container from the suffix): video with ``enc``, the sound
    (if any) as AAC (Opus in WebM). Odd frame sizes lose their last row/column."""
    enc = enc or Encoding()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = clip.frames
    h, w = _even(x.shape[1]), _even(x.shape[2])
    x = x[:, :h, :w]
    rate = Fraction(clip.fps).limit_denominator(1001)
    codecs = {"h264": "libx264", "mpeg4": "mpeg4", "vp9": "libvpx-vp9"}
    if enc.video_codec not in codecs:
        raise ValueError(f"video_codec={enc.video_codec!r} is not one of {sorted(codecs)}")
    sound, sr = clip.audio, clip.sample_rate
    if sound is not None and enc.audio_rate and enc.audio_rate != sr:
        n = max(1, int(len(sound) * enc.audio_rate / sr))
        sound = np.interp(np.arange(n) * sr / enc.audio_rate, np.arange(len(sound)), sound)
        sound, sr = sound.astype(np.float32), enc.audio_rate
    with av.open(str(path), "w") as out:
        vs = cast(VideoStream, out.add_stream(codecs[enc.video_codec], rate=rate))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        opts: dict[str, str] = {}
        if enc.video_codec == "h264":
            opts["preset"] = "veryfast"
        if enc.video_codec == "vp9":
            opts.update({"deadline": "realtime", "cpu-used": "8"})
        if enc.video_bitrate:
            vs.bit_rate = enc.video_bitrate
            if enc.video_codec == "vp9":
                opts["b"] = str(enc.video_bitrate)
        elif enc.crf is not None:
            if enc.video_codec == "mpeg4":
                opts["qscale"] = str(max(2, min(31, enc.crf // 3)))
            else:
                opts["crf"] = str(enc.crf)
                if enc.video_codec == "vp9":
                    opts["b"] = "0"
        vs.options = cast(Any, opts)
        aus: AudioStream | None = None
        if sound is not None and len(sound):
            acodec = "libopus" if path.suffix == ".webm" else "aac"
            if acodec == "libopus" and sr not in (8000, 12000, 16000, 24000, 48000):
                sound = np.interp(np.arange(int(len(sound) * 48000 / sr)) * sr / 48000,
                                  np.arange(len(sound)), sound).astype(np.float32)  # fmt: skip
                sr = 48000
            aus = cast(AudioStream, out.add_stream(acodec, rate=sr, layout="mono"))
            aus.bit_rate = enc.audio_bitrate
            resampler = av.AudioResampler(
                format=aus.codec_context.format.name, layout="mono", rate=sr,
                frame_size=960 if acodec == "libopus" else 1024,
            )  # fmt: skip
        per_s = max(1, round(clip.fps))
        for sec in range(int(np.ceil(len(x) / per_s))):  # one second at a time: interleaved
            for i in range(sec * per_s, min(len(x), (sec + 1) * per_s)):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(x[i]), format="rgb24")
                frame = frame.reformat(format="yuv420p")
                frame.pts = i
                out.mux(vs.encode(frame))
            if aus is not None and sound is not None:
                s0 = round(sec * per_s / clip.fps * sr)
                s1 = min(len(sound), round((sec + 1) * per_s / clip.fps * sr))
                if s1 > s0:
                    af = av.AudioFrame.from_ndarray(
                        sound[None, s0:s1].copy(), format="flt", layout="mono"
                    )
                    af.sample_rate, af.pts, af.time_base = sr, s0, Fraction(1, sr)
                    for f in resampler.resample(af):
                        out.mux(aus.encode(f))
        if aus is not None:
            for f in resampler.resample(None):
                out.mux(aus.encode(f))
            out.mux(aus.encode(None))
        out.mux(vs.encode(None))
    return path


# --- the transforms --------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    family: str
    strength: str
    what: str  # one line for the report
    apply: Callable[[Clip, np.random.Generator, Clip | None], tuple[Clip, Encoding]] = field(
        repr=False, compare=False
    )
    audio_only: bool = False  # meaningless for a silent source


def _scale(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize full frames (N, H, W, 3) with FFmpeg's area filter (what an editor's export does;
    far faster than numpy at this size)."""
    out = np.empty((len(x), height, width, 3), np.uint8)
    for i, f in enumerate(x):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        out[i] = vf.reformat(width=width, height=height, interpolation="AREA").to_ndarray()
    return out


def _frames(fn: Callable[[np.ndarray], np.ndarray], enc: Encoding | None = None) -> Any:
    def apply(c: Clip, rng: np.random.Generator, host: Clip | None) -> tuple[Clip, Encoding]:
        return replace(c, frames=fn(c.frames)), enc or Encoding()

    return apply


def _rescale(factor: float) -> Any:
    def fn(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[1:3]
        return _scale(x, _even(max(16, round(h * factor))), _even(max(16, round(w * factor))))

    return _frames(fn)


def _pad_square(x: np.ndarray) -> np.ndarray:
    """Letterbox/pillarbox onto a square black canvas."""
    h, w = x.shape[1:3]
    side = max(h, w)
    canvas = np.zeros((len(x), side, side, 3), np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    canvas[:, y0 : y0 + h, x0 : x0 + w] = x
    return canvas


def _pad_small(x: np.ndarray) -> np.ndarray:
    """Content at 60% of each side, off centre, on a grey-blue canvas of aspect 4:3."""
    h, w = x.shape[1:3]
    ch = _even(round(max(h, w * 3 / 4)))
    cw = _even(round(ch * 4 / 3))
    canvas = np.zeros((len(x), ch, cw, 3), np.uint8)
    canvas[...] = np.array([70, 80, 110], np.uint8)
    sh, sw = _even(round(ch * 0.6)), _even(round(ch * 0.6 * w / h))
    sw = min(sw, cw - 2)
    small = _scale(x, sh, sw)
    y0, x0 = round(ch * 0.3), round((cw - sw) * 0.15)
    canvas[:, y0 : y0 + sh, x0 : x0 + sw] = small
    return canvas


def _logo(x: np.ndarray) -> np.ndarray:
    x = edits.overlay(x, (0.82, 0.04, 0.96, 0.96), (20, 20, 20), 0.7)  # caption bar
    x = edits.overlay(x, (0.85, 0.08, 0.93, 0.7), (250, 250, 250), 1.0, stripes=5)  # "text"
    return edits.overlay(x, (0.04, 0.78, 0.2, 0.96), (230, 40, 40), 0.9)  # corner logo


def _pip(c: Clip, rng: np.random.Generator, host: Clip | None) -> tuple[Clip, Encoding]:
    """The source at half size in the lower right of another video (its picture only)."""
    if host is None:
        raise ValueError("picture-in-picture needs a host clip")
    n = len(c.frames)
    idx = np.minimum((np.arange(n) * host.fps / c.fps).astype(int), len(host.frames) - 1)
    canvas = host.frames[idx]
    h, w = canvas.shape[1:3]
    sh = _even(round(h * 0.5))
    sw = _even(min(w - 2, round(sh * c.frames.shape[2] / c.frames.shape[1])))
    y0, x0 = h - sh - _even(round(h * 0.05)), w - sw - _even(round(w * 0.05))
    out = canvas.copy()
    out[:, y0 : y0 + sh, x0 : x0 + sw] = _scale(c.frames, sh, sw)
    return replace(c, frames=out), Encoding()


def _retime(
    speed: float = 1.0, fps: float | None = None, start: float = 0.0, keep: float = 1.0
) -> Any:
    """Speed (sound resampled: faster and higher), output frame rate, trim (start, fraction kept)."""

    def apply(c: Clip, rng: np.random.Generator, host: Clip | None) -> tuple[Clip, Encoding]:
        out_fps = fps or c.fps
        t0 = start * c.seconds if start < 1 else start  # fraction or seconds
        dur = (c.seconds - t0) * keep / speed
        n = max(1, int(dur * out_fps))
        src = np.minimum(
            np.floor((t0 + np.arange(n) / out_fps * speed) * c.fps).astype(int), len(c.frames) - 1
        )
        sound = c.audio
        if sound is not None:
            s0 = int(t0 * c.sample_rate)
            s1 = s0 + int(dur * speed * c.sample_rate)
            sound = edits.wave_speed(sound[s0:s1], speed) if speed != 1.0 else sound[s0:s1]
        return Clip(c.frames[src], out_fps, sound, c.sample_rate), Encoding()

    return apply


def _sound(gain_db: float, snr_db: float | None, enc: Encoding) -> Any:
    def apply(c: Clip, rng: np.random.Generator, host: Clip | None) -> tuple[Clip, Encoding]:
        s = c.audio
        if s is not None:
            s = edits.wave_gain(s, gain_db)
            if snr_db is not None:
                s = edits.wave_noise(s, snr_db, rng)
        return replace(c, audio=s), enc

    return apply


_T = Transform
TRANSFORMS: dict[tuple[str, str], Transform] = {
    (t.family, t.strength): t
    for t in [
        _T("identity", "mild", "re-encoded as it is (H.264 crf 23)", _frames(lambda x: x)),
        _T("identity", "strong", "re-encoded as it is (H.264 crf 23)", _frames(lambda x: x)),
        _T("reencode", "mild", "H.264 at 150 kbit/s", _frames(lambda x: x, Encoding(crf=None, video_bitrate=150_000))),
        _T("reencode", "strong", "MPEG-4 Part 2 at 40 kbit/s, AAC 32 kbit/s",
           _frames(lambda x: x, Encoding("mpeg4", None, 40_000, audio_bitrate=32_000))),
        _T("rescale", "mild", "half the width and height", _rescale(0.5)),
        _T("rescale", "strong", "a quarter of the width and height", _rescale(0.25)),
        _T("crop", "mild", "centre 90% of each side (81% of the picture)", _frames(lambda x: edits.crop(x, (0.05, 0.05, 0.95, 0.95)))),
        _T("crop", "strong", "half the picture, off centre (71% of each side)",
           _frames(lambda x: edits.crop(x, (0.05, 0.25, 0.76, 0.96)))),
        _T("pad", "mild", "letterbox/pillarbox to a square", _frames(_pad_square)),
        _T("pad", "strong", "60% size, off centre, on a 4:3 coloured canvas", _frames(_pad_small)),
        _T("flip", "mild", "mirrored left-right", _frames(edits.flip)),
        _T("flip", "strong", "mirrored and zoomed 85%", _frames(lambda x: edits.crop(edits.flip(x), (0.08, 0.06, 0.93, 0.91)))),
        _T("grayscale", "mild", "half desaturated", _frames(lambda x: edits.grayscale(x, 0.5))),
        _T("grayscale", "strong", "grayscale", _frames(edits.grayscale)),
        _T("color", "mild", "brightness +20, contrast 1.1", _frames(lambda x: edits.adjust(x, 20, 1.1))),
        _T("color", "strong", "brightness +60", _frames(lambda x: edits.adjust(x, 60, 1.0))),
        _T("overlay", "mild", "caption bar with text and a corner logo", _frames(_logo)),
        _T("overlay", "strong", "picture-in-picture: half size inside another video", _pip),
        _T("fps", "mild", "12 frames/s", _retime(fps=12.0)),
        _T("fps", "strong", "5 frames/s", _retime(fps=5.0)),
        _T("speed", "mild", "1.1x faster (sound too)", _retime(speed=1.1)),
        _T("speed", "strong", "1.5x faster (sound too)", _retime(speed=1.5)),
        _T("trim", "mild", "first 0.5 s cut", _retime(start=0.5)),
        _T("trim", "strong", "the middle half only", _retime(start=0.25, keep=0.5)),
        _T("audio", "mild", "sound -6 dB, AAC 48 kbit/s", _sound(-6.0, None, Encoding(audio_bitrate=48_000)), True),
        _T("audio", "strong", "sound -12 dB + white noise at 10 dB SNR, 16 kHz AAC 24 kbit/s",
           _sound(-12.0, 10.0, Encoding(audio_bitrate=24_000, audio_rate=16000)), True),
    ]
}  # fmt: skip
# the evaluation's families; "identity" (a plain re-encode) is for checking the bookkeeping
FAMILIES = tuple(dict.fromkeys(f for f, _ in TRANSFORMS if f != "identity"))


def transform(
    clip: Clip, family: str, strength: str, rng: np.random.Generator, host: Clip | None = None
) -> tuple[Clip, Encoding]:
    """The edited clip and its encoding for one family at one strength (:data:`TRANSFORMS`)."""
    key = (family, strength)
    if key not in TRANSFORMS:
        raise ValueError(
            f"unknown transform {family}/{strength}; families: {list(FAMILIES)}, strengths: {list(STRENGTHS)}"
        )
    return TRANSFORMS[key].apply(clip, rng, host)
