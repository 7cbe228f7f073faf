"""A synthetic labeled audio-visual dataset: real H.264/AAC MP4 files in class folders.

Picture and sound carry the same class. Class ``c`` has its own shape, colour and motion path
(picture) and its own spoken word (sound: ``espeak-ng`` says the class name every 1-2.5 s). When
espeak-ng is absent the sound falls back to a class-specific tone pattern (base pitch and beep
rhythm), and :func:`make_synth_dataset` says so.

Under the speech runs a faint steady hum at a class-specific pitch (``class_hum``, default
0.15; 0 turns it off): word recognition from 30-odd examples per class is slow to learn from
scratch, and the hum lets a small model find the audio class within minutes on a CPU.
``make_clip(..., sync=0.6)`` also makes the shape swell while a word is spoken (an
instance-level cue; off by default). Per-clip nuisance, so the task is not trivial: path offset, speed, phase and size of the shape;
hue jitter; a background colour gradient with pixel noise; a distractor blob of random colour on
its own random path; speech pitch, rate and voice variant (or tone pitch jitter); word timing;
background audio noise and level.

Layout: ``OUT/<class name>/<class name>_<nnnn>.mp4``; ``OUT/labels.csv`` lists ``path,label``.
Deterministic for a seed (espeak-ng output included).
"""

from __future__ import annotations

import colorsys
import csv
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

__all__ = ["CLASS_NAMES", "SynthReport", "espeak_available", "make_clip", "make_synth_dataset"]

CLASS_NAMES = (
    "apple", "banana", "cherry", "dolphin", "eagle", "forest", "guitar", "hammer",
    "island", "jungle", "kettle", "lemon", "mango", "needle", "orange", "pepper",
)  # fmt: skip
_SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "bar", "star")
_PATHS = ("horizontal", "vertical", "circle", "diagonal", "bounce", "figure8", "zigzag", "pulse")


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@dataclass
class SynthReport:
    out: Path
    clips: int
    classes: list[str]
    speech: bool  # False: tone fallback
    seconds: float


def _class_style(c: int, k: int) -> tuple[str, tuple[float, float, float], str]:
    shape = _SHAPES[c % len(_SHAPES)]
    path = _PATHS[(c * 3 + c // len(_PATHS)) % len(_PATHS)]
    hue = (c / k + 0.37 * (c // len(_SHAPES))) % 1.0
    return shape, (hue, 0.85, 0.95), path


def _shape_mask(
    shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float
) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r + 2 * np.abs(dx))
    if shape == "cross":
        return ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r)) | (
            (np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r)
        )
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "bar":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r * 0.35)
    # star: a disc with a notched rim
    ang = np.arctan2(dy, dx)
    rad = r * (0.6 + 0.4 * np.cos(5 * ang) ** 2)
    return dx * dx + dy * dy <= rad * rad


def _trajectory(path: str, u: float) -> tuple[float, float]:
    """Position in [-1, 1]^2 at phase u (cycles)."""
    s = 2 * np.pi * u
    if path == "horizontal":
        return float(np.sin(s)), 0.0
    if path == "vertical":
        return 0.0, float(np.sin(s))
    if path == "circle":
        return float(np.cos(s)), float(np.sin(s))
    if path == "diagonal":
        return float(np.sin(s)), float(np.sin(s))
    if path == "bounce":
        return float(np.sin(s) * 0.8), float(1 - 2 * abs(np.sin(s)))
    if path == "figure8":
        return float(np.sin(s)), float(np.sin(2 * s))
    if path == "zigzag":
        return float(2 * abs((u % 1) * 2 - 1) - 1), float(np.sign(np.sin(4 * s)) * 0.5)
    return 0.0, 0.0  # pulse: stays, the size pulses


def _rgb(hsv: tuple[float, float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(*hsv), dtype=np.float32) * 255


def _render(
    c: int,
    k: int,
    n_frames: int,
    fps: int,
    width: int,
    height: int,
    rng: np.random.Generator,
    loudness: np.ndarray,
    sync: float,
) -> np.ndarray:
    """Frames (N, H, W, 3) uint8; with ``sync`` > 0 the shape swells by up to that fraction with
    ``loudness`` (N,) in [0, 1], the speech envelope."""
    shape, hsv, path = _class_style(c, k)
    hue = (hsv[0] + rng.uniform(-0.04, 0.04)) % 1.0
    colour = _rgb((hue, hsv[1] * rng.uniform(0.8, 1.0), hsv[2] * rng.uniform(0.75, 1.0)))
    speed = rng.uniform(0.25, 0.6)  # cycles per second
    phase = rng.uniform(0, 1)
    amp = rng.uniform(0.4, 0.8) * min(width, height) / 2
    ox = width / 2 + rng.uniform(-0.15, 0.15) * width
    oy = height / 2 + rng.uniform(-0.15, 0.15) * height
    size = rng.uniform(0.12, 0.2) * min(width, height)
    bg0, bg1 = rng.uniform(0, 110, 3), rng.uniform(0, 110, 3)
    noise = rng.uniform(3, 18)
    d_col = rng.uniform(0, 255, 3)
    d_path = _PATHS[int(rng.integers(len(_PATHS)))]
    d_speed, d_phase, d_size = rng.uniform(0.2, 0.7), rng.uniform(0, 1), rng.uniform(0.07, 0.12)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    grad = (xx / max(1, width - 1))[..., None]
    background = bg0 * (1 - grad) + bg1 * grad  # (H, W, 3)
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for i in range(n_frames):
        t = i / fps
        img = background.copy()
        dx, dy = _trajectory(d_path, d_speed * t + d_phase)
        dmask = _shape_mask("disc", xx, yy, width / 2 + dx * width * 0.4, height / 2 + dy * height * 0.4,
                            d_size * min(width, height))  # fmt: skip
        img[dmask] = d_col
        px, py = _trajectory(path, speed * t + phase)
        r = (
            size * (1 + 0.35 * np.sin(2 * np.pi * (speed * 2 * t + phase)))
            if path == "pulse"
            else size
        )
        r *= 1 + sync * float(loudness[i])
        img[_shape_mask(shape, xx, yy, ox + px * amp, oy + py * amp, r)] = colour
        img += rng.normal(0, noise, img.shape).astype(np.float32)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def _espeak(word: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    pitch, rate = int(rng.integers(20, 80)), int(rng.integers(130, 200))
    voice = ["en", "en+m3", "en+f2", "en+f4", "en-us", "en+m7"][int(rng.integers(6))]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "w.wav"
        subprocess.run(
            ["espeak-ng", "-w", str(wav), "-p", str(pitch), "-s", str(rate), "-v", voice, word],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        with wave.open(str(wav)) as w:
            sr, n, width = w.getframerate(), w.getnframes(), w.getsampwidth()
            raw = w.readframes(n)
    if width != 2:
        raise RuntimeError(f"espeak-ng wrote {8 * width}-bit audio; expected 16-bit")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    # trim silence, resample linearly to sample_rate
    loud = np.nonzero(np.abs(x) > 0.01)[0]
    if len(loud):
        x = x[loud[0] : loud[-1] + 1]
    m = max(1, round(len(x) * sample_rate / sr))
    return np.interp(np.linspace(0, len(x) - 1, m), np.arange(len(x)), x).astype(np.float32)


def _tone_word(c: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Fallback "word": class-specific base pitch and beep rhythm, per-clip pitch jitter."""
    base = 220.0 * 2 ** ((c * 5 % 24) / 12) * 2 ** (rng.uniform(-1.5, 1.5) / 12)
    rhythm = [(c >> b) & 1 for b in range(4)]  # 4 beeps: long (1) or short (0)
    parts = []
    for j, long in enumerate(rhythm):
        dur = 0.16 if long else 0.07
        t = np.arange(int(dur * sample_rate)) / sample_rate
        f = base * (1.5 if j % 2 else 1.0)
        env = np.minimum(1, np.minimum(t, dur - t) * 80)
        parts.append(0.6 * env * np.sin(2 * np.pi * f * t))
        parts.append(np.zeros(int(0.05 * sample_rate)))
    return np.concatenate(parts).astype(np.float32)


def _soundtrack(
    c: int,
    name: str,
    seconds: float,
    sample_rate: int,
    rng: np.random.Generator,
    speech: bool,
    class_hum: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(mixed audio, the words alone) at ``sample_rate``. ``class_hum`` > 0 adds a steady tone
    of that amplitude at a class-specific pitch (jittered by up to half a semitone per clip)."""
    n = round(seconds * sample_rate)
    word = _espeak(name, rng, sample_rate) if speech else _tone_word(c, rng, sample_rate)
    peak = float(np.abs(word).max()) or 1.0
    word = word / peak * 0.6
    audio = rng.normal(0, rng.uniform(0.005, 0.05), n).astype(np.float32)  # background hiss
    hum_f = rng.uniform(50, 400)
    audio += rng.uniform(0, 0.05) * np.sin(2 * np.pi * hum_f * np.arange(n) / sample_rate).astype(
        np.float32
    )
    if class_hum > 0:
        f = 300.0 * 2 ** ((c * 5 % 24 + rng.uniform(-0.5, 0.5)) / 12)
        amp = class_hum * rng.uniform(0.6, 1.0)
        audio += (amp * np.sin(2 * np.pi * f * np.arange(n) / sample_rate)).astype(np.float32)
    words = np.zeros(n, dtype=np.float32)
    t = rng.uniform(0.0, 0.6)
    while t < seconds:
        s0 = round(t * sample_rate)
        seg = word[: max(0, n - s0)] * rng.uniform(0.5, 1.0)
        words[s0 : s0 + len(seg)] += seg
        t += len(word) / sample_rate + rng.uniform(0.2, 1.2)
    return np.clip(audio + words, -1, 1), words


def make_clip(
    path: str | Path,
    c: int,
    *,
    classes: int,
    seconds: float,
    seed: int,
    width: int = 128,
    height: int = 96,
    fps: int = 16,
    sample_rate: int = 16000,
    speech: bool | None = None,
    sync: float = 0.0,
    class_hum: float = 0.15,
) -> Path:
    """Encode one H.264/AAC MP4 of class ``c`` (out of ``classes``) at ``path``.

    ``sync`` > 0 makes the shape swell with the speech envelope (an instance-level cue on top of
    the class). Off by default: the class is the shared content."""
    path = Path(path)
    if speech is None:
        speech = espeak_available()
    rng = np.random.default_rng([seed, c])
    n_frames = max(1, round(seconds * fps))
    audio, words = _soundtrack(c, CLASS_NAMES[c], seconds, sample_rate, rng, speech, class_hum)
    hop = sample_rate / fps
    rms = np.array([np.sqrt(np.mean(words[round(i * hop) : round((i + 1) * hop)] ** 2) + 1e-12)
                    for i in range(n_frames)])  # fmt: skip
    loudness = np.clip(rms / (rms.max() + 1e-9), 0, 1)
    frames = _render(c, classes, n_frames, fps, width, height, rng, loudness, sync)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = cast(VideoStream, out.add_stream("libx264", rate=fps))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "20", "preset": "veryfast"}
        aus = cast(AudioStream, out.add_stream("aac", rate=sample_rate, layout="mono"))
        resampler = av.AudioResampler(format=aus.codec_context.format.name, layout="mono",
                                      rate=sample_rate, frame_size=1024)  # fmt: skip
        for sec in range(int(np.ceil(seconds))):  # one second at a time: interleaved muxing
            for i in range(sec * fps, min(n_frames, (sec + 1) * fps)):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24").reformat(
                    format="yuv420p"
                )
                frame.pts = i
                out.mux(vs.encode(frame))
            s0, s1 = sec * sample_rate, min(len(audio), (sec + 1) * sample_rate)
            if s1 > s0:
                af = av.AudioFrame.from_ndarray(
                    audio[None, s0:s1].copy(), format="fltp", layout="mono"
                )
                af.sample_rate, af.pts, af.time_base = sample_rate, s0, Fraction(1, sample_rate)
                for f in resampler.resample(af):
                    out.mux(aus.encode(f))
        for f in resampler.resample(None):
            out.mux(aus.encode(f))
        out.mux(aus.encode(None))
        out.mux(vs.encode(None))
    return path


def make_synth_dataset(
    out: str | Path,
    n: int,
    *,
    classes: int = 8,
    seconds: float = 8.0,
    seed: int = 0,
    width: int = 128,
    height: int = 96,
    fps: int = 16,
    sample_rate: int = 16000,
    speech: bool | None = None,
    class_hum: float = 0.15,
    progress: bool = True,
) -> SynthReport:
    """Write ``n`` clips, classes round-robin, to ``out/<class>/``; returns a report."""
    from tqdm import tqdm

    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"--classes must be in 2..{len(CLASS_NAMES)}, got {classes}")
    if n < 1 or seconds <= 0:
        raise ValueError(f"need n >= 1 and seconds > 0, got n={n}, seconds={seconds}")
    if speech is None:
        speech = espeak_available()
    if not speech:
        print("pemt data synth: espeak-ng not found; the sound is a class-specific tone pattern "
              "instead of speech (install espeak-ng, e.g. `make setup`)", file=sys.stderr)  # fmt: skip
    root = Path(out)
    rows = []
    for i in tqdm(range(n), desc="synth", unit="clip", disable=not progress, file=sys.stderr):
        c = i % classes
        name = CLASS_NAMES[c]
        p = make_clip(root / name / f"{name}_{i:04d}.mp4", c, classes=classes, seconds=seconds,
                      seed=seed * 1_000_003 + i, width=width, height=height, fps=fps,
                      sample_rate=sample_rate, speech=speech, class_hum=class_hum)  # fmt: skip
        rows.append((p.relative_to(root).as_posix(), name))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return SynthReport(root, n, list(CLASS_NAMES[:classes]), speech, seconds)
