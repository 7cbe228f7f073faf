"""Edits a copy of a video goes through on its way back to a search box, as numpy functions.

Torch-free and deterministic: every random choice comes from the ``np.random.Generator`` the
caller passes. One set of functions serves two callers:

- training (:func:`random_view`): two differently edited views of one decoded window (frames
  uint8 ``(T, F, S, S, 3)``, log-mel float32 ``(T, n_mels, A)``, masks bool ``(T,)``), for the
  augmentation-consistency objective of ``pemt train --recipe robust``. Shapes and dtypes are
  kept; masks follow the content (a sped-up window holds fewer segments);
- the near-duplicate evaluation (:mod:`pemt.eval`), which applies the picture edits to
  full-resolution frames and the sound edits to waveforms before encoding real files.

Picture edits take ``(..., H, W, 3)`` uint8 and boxes as fractions of the frame
``(top, left, bottom, right)``, so they mean the same thing at any resolution. Timeline edits
(:func:`timeline`) map output positions to source positions for a speed, a start offset and a
held frame (a lower frame rate) and work for frames and log-mel columns alike. Sound edits on
log-mel (:func:`mel_gain`, :func:`mel_noise`, :func:`mel_lowpass`, :func:`mel_pitch`) mirror
the waveform edits (:func:`wave_gain`, :func:`wave_noise`, :func:`wave_speed`) and a lossy
re-encode (high bands lost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pemt.config import MediaConfig

__all__ = [
    "PICTURE_EDITS",
    "SCOPES",
    "SOUND_EDITS",
    "VIEW_EDITS",
    "Box",
    "View",
    "adjust",
    "crop",
    "crop_resize",
    "degrade",
    "flip",
    "grayscale",
    "mel_gain",
    "mel_lowpass",
    "mel_noise",
    "mel_pitch",
    "overlay",
    "place",
    "random_view",
    "resize",
    "timeline",
    "views",
    "wave_gain",
    "wave_noise",
    "wave_speed",
]

Box = tuple[float, float, float, float]  # (top, left, bottom, right), fractions of the frame
LOG_FLOOR = float(np.log(1e-6))  # log-mel of silence (pemt.media: log(1e-6 + mel))


# --- picture ---------------------------------------------------------------------------------


def _u8(x: np.ndarray) -> np.ndarray:
    """Round and clip float pixels to uint8 (in place; np.clip with int bounds is very slow)."""
    x = np.asarray(x, np.float32)
    np.rint(x, out=x)
    np.maximum(x, 0.0, out=x)
    np.minimum(x, 255.0, out=x)
    return x.astype(np.uint8)


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampling one axis from n_in to n_out pixels: (n_out, K) input indices and weights of
    a triangle filter as wide as one output pixel (at least one input pixel), pixel centres
    aligned, rows summing to 1. Bilinear when enlarging, antialiased when shrinking."""
    scale = n_in / n_out
    support = max(1.0, scale)
    centres = (np.arange(n_out) + 0.5) * scale  # in input pixel units
    k = int(np.ceil(2 * support)) + 1
    first = np.floor(centres - support - 0.5).astype(np.intp) + 1
    idx = first[:, None] + np.arange(k)[None, :]  # (n_out, K)
    w = np.maximum(0.0, 1.0 - np.abs(idx + 0.5 - centres[:, None]) / support)
    w[(idx < 0) | (idx >= n_in)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, n_in - 1), w.astype(np.float32)


def _resample(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    idx, w = _taps(x.shape[axis], n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = np.zeros(x.shape[:axis] + (n_out,) + x.shape[axis + 1 :], np.float32)
    for j in range(idx.shape[1]):
        if w[:, j].any():
            out += np.take(x, idx[:, j], axis=axis) * w[:, j].reshape(shape)
    return out


def resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (..., H, W, 3) uint8 to (..., height, width, 3) uint8: bilinear when enlarging,
    an antialiasing triangle filter when shrinking (a few weighted gathers per axis)."""
    if height < 1 or width < 1:
        raise ValueError(f"resize needs a positive size, got {height}x{width}")
    h, w = x.shape[-3:-1]
    if (h, w) == (height, width):
        return x.copy()
    y = x.astype(np.float32)
    if h != height:
        y = _resample(y, x.ndim - 3, height)
    if w != width:
        y = _resample(y, x.ndim - 2, width)
    return _u8(y)


def _pixels(box: Box, h: int, w: int) -> tuple[int, int, int, int]:
    top, left, bottom, right = box
    if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise ValueError(
            f"box {box} must be (top, left, bottom, right) with 0 <= top < bottom <= 1"
        )
    y0, x0 = int(round(top * h)), int(round(left * w))
    y1, x1 = max(y0 + 1, int(round(bottom * h))), max(x0 + 1, int(round(right * w)))
    return y0, x0, min(y1, h), min(x1, w)


def crop(x: np.ndarray, box: Box) -> np.ndarray:
    """The ``box`` part of every frame (a smaller picture)."""
    y0, x0, y1, x1 = _pixels(box, *x.shape[-3:-1])
    return x[..., y0:y1, x0:x1, :].copy()


def crop_resize(x: np.ndarray, box: Box) -> np.ndarray:
    """Crop ``box`` and scale it back to the frame size (a zoom); shape kept."""
    h, w = x.shape[-3:-1]
    return resize(crop(x, box), h, w)


def place(x: np.ndarray, box: Box, canvas: np.ndarray | tuple[int, int, int]) -> np.ndarray:
    """Scale every frame into ``box`` of a canvas of the same size: a colour (letterbox,
    pillarbox, padding) or frames of another video (picture in picture, ``canvas`` of x's shape
    or broadcastable to it)."""
    h, w = x.shape[-3:-1]
    y0, x0, y1, x1 = _pixels(box, h, w)
    if isinstance(canvas, tuple):
        out = np.empty_like(x)
        out[...] = np.asarray(canvas, np.uint8)
    else:
        out = np.broadcast_to(canvas, x.shape).copy()
    out[..., y0:y1, x0:x1, :] = resize(x, y1 - y0, x1 - x0)
    return out


def flip(x: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return x[..., ::-1, :].copy()


def grayscale(x: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """Blend towards luma (BT.601: 0.299 R + 0.587 G + 0.114 B) by ``amount`` (1: grey)."""
    xf = x.astype(np.float32)  # explicit: uint8 * a float32 scalar would compute in float16
    luma = xf[..., 0] * 0.299 + xf[..., 1] * 0.587 + xf[..., 2] * 0.114
    if amount >= 1.0:
        grey = _u8(luma)
        return np.repeat(grey[..., None], 3, axis=-1)
    luma *= amount
    xf *= 1.0 - amount
    for c in range(3):  # per channel: a broadcast over the last axis of 3 is slow in numpy
        xf[..., c] += luma
    return _u8(xf)


def adjust(x: np.ndarray, brightness: float = 0.0, contrast: float = 1.0) -> np.ndarray:
    """``(x - 128) * contrast + 128 + brightness`` (brightness in 0..255 units), clipped; a
    256-entry lookup table."""
    lut = np.clip(np.rint((np.arange(256) - 128.0) * contrast + 128.0 + brightness), 0, 255)
    return lut.astype(np.uint8)[x]


def overlay(
    x: np.ndarray, box: Box, colour: tuple[int, int, int], alpha: float = 1.0, stripes: int = 0
) -> np.ndarray:
    """A logo/caption block: ``box`` filled with ``colour`` at opacity ``alpha``; with
    ``stripes`` > 0, every other of that many horizontal bands is left out (text-like)."""
    h, w = x.shape[-3:-1]
    y0, x0, y1, x1 = _pixels(box, h, w)
    out = x.copy()
    region = out[..., y0:y1, x0:x1, :].astype(np.float32)
    blend = region + alpha * (np.asarray(colour, np.float32) - region)
    if stripes > 0:
        band = (np.arange(y1 - y0) * stripes // max(1, y1 - y0)) % 2 == 0
        blend[..., ~band, :, :] = region[..., ~band, :, :]
    out[..., y0:y1, x0:x1, :] = _u8(blend)
    return out


def degrade(
    x: np.ndarray, factor: float, noise: float = 0.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """What a low bitrate or a small copy leaves: down by ``factor`` (>= 1), back up (blur,
    blocks), plus Gaussian noise of ``noise`` (0..255 units; needs ``rng``). Shape kept."""
    h, w = x.shape[-3:-1]
    small = resize(x, max(1, round(h / factor)), max(1, round(w / factor)))
    out = resize(small, h, w)
    if noise > 0:
        if rng is None:
            raise ValueError("degrade with noise needs an rng")
        n = rng.normal(0.0, noise, out.shape).astype(np.float32)
        out = _u8(out + n)
    return out


# --- timeline --------------------------------------------------------------------------------


def timeline(
    n_in: int, n_out: int, *, speed: float = 1.0, offset: float = 0.0, hold: int = 1
) -> np.ndarray:
    """Source index of each of ``n_out`` output positions, -1 past the end of the ``n_in``
    source positions. Output ``j`` shows source ``floor(offset + speed * hold * (j // hold))``:
    ``speed`` 1.5 plays 1.5 source positions per output position, ``offset`` skips the start
    (a trim), ``hold`` repeats each shown position ``hold`` times (a lower frame rate)."""
    if speed <= 0 or hold < 1 or offset < 0:
        raise ValueError(f"need speed > 0, hold >= 1, offset >= 0; got {speed}, {hold}, {offset}")
    j = np.arange(n_out)
    src = np.floor(offset + speed * hold * (j // hold) + 1e-9).astype(np.intp)
    return np.where(src < n_in, src, -1)


# --- sound: log-mel (training) ---------------------------------------------------------------


def mel_gain(audio: np.ndarray, db: float) -> np.ndarray:
    """Louder or quieter by ``db`` decibels, on ``log(1e-6 + mel)`` values."""
    g = 10.0 ** (db / 10.0)  # power
    power = np.maximum(np.exp(audio.astype(np.float64)) - 1e-6, 0.0)
    return np.log(1e-6 + g * power).astype(np.float32)


def mel_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Noise ``snr_db`` below the mean power of ``audio`` (n_mels, frames per leading index),
    with a random spectral tilt and random per-cell fluctuation."""
    power = np.maximum(np.exp(audio.astype(np.float64)) - 1e-6, 0.0)
    level = power.mean(axis=(-2, -1), keepdims=True) / 10.0 ** (snr_db / 10.0)
    m = audio.shape[-2]
    tilt = np.exp(rng.uniform(-2.0, 2.0) * np.linspace(0.0, 1.0, m))[:, None]
    cells = rng.exponential(1.0, audio.shape)
    return np.log(1e-6 + power + level * tilt / tilt.mean() * cells).astype(np.float32)


def mel_lowpass(audio: np.ndarray, keep: float) -> np.ndarray:
    """A lossy encoder's missing high bands: mel bins above ``keep`` (fraction of the bins) fade
    to silence over a few bins."""
    m = audio.shape[-2]
    cut = keep * m
    fade = np.clip((np.arange(m) - cut) / 3.0, 0.0, 1.0)[:, None]  # 0 below the cut, 1 above
    power = np.maximum(np.exp(audio.astype(np.float64)) - 1e-6, 0.0)
    return np.log(1e-6 + power * (1.0 - fade * (1.0 - 1e-3))).astype(np.float32)  # -30 dB


def mel_pitch(audio: np.ndarray, factor: float, media: MediaConfig) -> np.ndarray:
    """Frequencies times ``factor`` (a sped-up tape): output bin i reads the input at the bin
    whose centre frequency is ``f_i / factor`` (HTK or Slaney scale as ``media``)."""
    from pemt.media._audio import hz_to_mel, mel_to_hz

    m = audio.shape[-2]
    mels = np.linspace(
        hz_to_mel(0.0, media.mel_scale), hz_to_mel(media.sample_rate / 2, media.mel_scale), m + 2
    )[1:-1]
    centres = mel_to_hz(mels, media.mel_scale)
    pos = np.interp(centres / factor, centres, np.arange(m))  # fractional input bin per output bin
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, m - 1)
    w = (pos - i0).astype(np.float32)[:, None]
    out = audio[..., i0, :] * (1 - w) + audio[..., i1, :] * w
    return out.astype(np.float32)


# --- sound: waveforms (evaluation files) -----------------------------------------------------


def wave_gain(samples: np.ndarray, db: float) -> np.ndarray:
    return np.clip(samples * 10.0 ** (db / 20.0), -1.0, 1.0).astype(np.float32)


def wave_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise ``snr_db`` below the signal's power."""
    p = float(np.mean(samples.astype(np.float64) ** 2)) + 1e-12
    n = rng.normal(0.0, np.sqrt(p / 10.0 ** (snr_db / 10.0)), samples.shape)
    return np.clip(samples + n, -1.0, 1.0).astype(np.float32)


def wave_speed(samples: np.ndarray, speed: float) -> np.ndarray:
    """Played ``speed`` times faster, pitch included (linear interpolation), last axis."""
    n = samples.shape[-1]
    m = max(1, int(n / speed))
    pos = np.arange(m) * speed
    i0 = np.minimum(np.floor(pos).astype(np.intp), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (pos - i0).astype(np.float32)
    return (samples[..., i0] * (1 - w) + samples[..., i1] * w).astype(np.float32)


# --- training views --------------------------------------------------------------------------

# Families a training view draws from, with the probability that a view gets each one.
VIEW_EDITS: dict[str, float] = {
    "crop": 0.5,
    "pad": 0.15,
    "flip": 0.5,
    "grayscale": 0.25,
    "color": 0.5,
    "overlay": 0.2,
    "pip": 0.15,
    "degrade": 0.3,
    "fps": 0.2,
    "speed": 0.3,
    "trim": 0.5,
    "gain": 0.5,
    "noise": 0.3,
    "lowpass": 0.3,
}


PICTURE_EDITS = ("crop", "pad", "flip", "grayscale", "color", "overlay", "pip", "degrade")
SOUND_EDITS = ("gain", "noise", "lowpass")
# What a view may touch, with its probability. Most real edits change one modality (a crop leaves
# the sound as it was); timeline edits (fps, speed, trim) change both and come only with "both".
SCOPES: dict[str, float] = {"picture": 0.45, "sound": 0.2, "both": 0.35}


@dataclass
class View:
    """One edited window: arrays as the loader batches them, and the edits applied."""

    frames: np.ndarray  # uint8 (T, F, S, S, 3)
    audio: np.ndarray  # float32 (T, n_mels, A)
    visual_mask: np.ndarray  # bool (T,)
    audio_mask: np.ndarray  # bool (T,)
    edits: list[str]


def _random_box(rng: np.random.Generator, min_area: float, max_aspect: float = 1.5) -> Box:
    area = rng.uniform(min_area, 1.0)
    aspect = np.exp(rng.uniform(-np.log(max_aspect), np.log(max_aspect)))
    h = float(np.clip(np.sqrt(area / aspect), 0.05, 1.0))
    w = float(np.clip(np.sqrt(area * aspect), 0.05, 1.0))
    top, left = rng.uniform(0, 1 - h), rng.uniform(0, 1 - w)
    return (top, left, top + h, left + w)


def _retime(
    frames: np.ndarray, audio: np.ndarray, vmask: np.ndarray, amask: np.ndarray,
    speed: float, offset_s: float, hold: int, media: MediaConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Speed, trim and frame-rate edits on a window: the valid segments' frames and log-mel
    columns laid end to end, resampled with :func:`timeline`, cut back into segments."""
    t, f = frames.shape[:2]
    a = audio.shape[-1]
    out_f, out_a = frames.copy(), audio.copy()
    out_vm, out_am = vmask.copy(), amask.copy()
    nv = int(vmask.sum())
    if nv:
        flat = frames[vmask].reshape(nv * f, *frames.shape[2:])  # (nv*F, S, S, 3)
        src = timeline(len(flat), t * f, speed=speed, offset=offset_s * media.fps, hold=hold)
        n_out = int((src >= 0).sum())
        keep = -(-n_out // f)  # segments that hold any frame
        got = flat[np.where(src >= 0, src, len(flat) - 1)].reshape(t, f, *frames.shape[2:])
        out_f[:] = 0
        out_f[:keep] = got[:keep]  # a partial last segment holds the last frame
        out_vm[:] = np.arange(t) < keep
    na = int(amask.sum())
    if na:
        flat = np.concatenate(list(audio[amask]), axis=-1)  # (n_mels, na*A)
        cols = a / media.segment_seconds
        src = timeline(flat.shape[-1], t * a, speed=speed, offset=offset_s * cols)
        n_out = int((src >= 0).sum())
        keep = -(-n_out // a)
        got = np.where(src >= 0, flat[:, np.maximum(src, 0)], LOG_FLOOR)  # (n_mels, T*A)
        got = got.reshape(audio.shape[1], t, a).transpose(1, 0, 2)
        out_a[:] = 0.0
        out_a[:keep] = got[:keep]
        out_am[:] = np.arange(t) < keep
        if speed != 1.0:
            out_a[:keep] = mel_pitch(out_a[:keep], speed, media)
    if nv and na:  # content runs out at the same time in both streams
        n = min(int(out_vm.sum()), int(out_am.sum())) or max(int(out_vm.sum()), int(out_am.sum()))
        out_vm &= np.arange(t) < n
        out_am &= np.arange(t) < n
    out_f[~out_vm] = 0
    out_a[~out_am] = 0.0
    return out_f, out_a, out_vm, out_am


def random_view(
    frames: np.ndarray,
    audio: np.ndarray,
    visual_mask: np.ndarray,
    audio_mask: np.ndarray,
    rng: np.random.Generator,
    media: MediaConfig,
    *,
    host: np.ndarray | None = None,
    probabilities: dict[str, float] | None = None,
    scopes: dict[str, float] | None = None,
) -> View:
    """An edited copy of one window for training: each family of :data:`VIEW_EDITS` applied
    with its probability and a random strength, from ``rng`` only (same rng state, same view).
    ``host`` (frames of another window, same shape) is the background of picture-in-picture;
    without one that edit is skipped. With ``scopes`` (e.g. :data:`SCOPES`) a view first draws
    what it may touch: the picture only, the sound only, or both (only then timeline edits).
    Shapes and dtypes are kept; masked segments stay zero."""
    p = dict(VIEW_EDITS if probabilities is None else probabilities)
    unknown = set(p) - set(VIEW_EDITS)
    if unknown:
        raise ValueError(f"unknown edits {sorted(unknown)}; known: {sorted(VIEW_EDITS)}")
    draw = {name: bool(rng.random() < p.get(name, 0.0)) for name in VIEW_EDITS}
    if scopes is not None:
        names = list(scopes)
        weights = np.array([scopes[n] for n in names], np.float64)
        scope = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        allowed = {"picture": set(PICTURE_EDITS), "sound": set(SOUND_EDITS)}.get(
            scope, set(VIEW_EDITS)
        )
        draw = {name: on and name in allowed for name, on in draw.items()}
    applied: list[str] = []
    vm, am = visual_mask.astype(bool), audio_mask.astype(bool)
    x, a = frames, audio

    speed = float(rng.uniform(1.1, 1.6)) if draw["speed"] else 1.0
    offset = float(rng.uniform(0.0, 1.5) * media.segment_seconds) if draw["trim"] else 0.0
    hold = int(rng.integers(2, 5)) if draw["fps"] else 1
    if speed != 1.0 or offset > 0 or hold > 1:
        x, a, vm, am = _retime(x, a, vm, am, speed, offset, hold, media)
        applied += [
            n for n, on in (("speed", speed != 1.0), ("trim", offset > 0), ("fps", hold > 1)) if on
        ]

    if vm.any():
        v = x[vm]  # (n, F, S, S, 3)
        if draw["crop"]:
            v = crop_resize(v, _random_box(rng, 0.2))
            applied.append("crop")
        if draw["pad"]:
            scale = float(rng.uniform(0.55, 0.9))
            wide = rng.random() < 0.5  # bars top/bottom or left/right
            bh, bw = (scale, 1.0) if wide else (1.0, scale)
            top, left = rng.uniform(0, 1 - bh), rng.uniform(0, 1 - bw)
            c = int(rng.integers(0, 40)) if rng.random() < 0.8 else int(rng.integers(0, 256))
            v = place(v, (top, left, top + bh, left + bw), (c, c, c))
            applied.append("pad")
        if draw["flip"]:
            v = flip(v)
            applied.append("flip")
        if draw["color"]:
            v = adjust(v, float(rng.uniform(-70, 70)), float(np.exp(rng.uniform(-0.5, 0.5))))
            applied.append("color")
        if draw["grayscale"]:
            v = grayscale(v, float(rng.uniform(0.6, 1.0)))
            applied.append("grayscale")
        if draw["degrade"]:
            v = degrade(v, float(rng.uniform(1.5, 4.0)), float(rng.uniform(0, 8)), rng)
            applied.append("degrade")
        if draw["overlay"]:
            r, g, b = (int(c) for c in rng.integers(0, 256, 3))
            colour = (r, g, b)
            v = overlay(v, _random_box(rng, 0.02, 4.0) if rng.random() < 0.5 else
                        _small_box(rng), colour, float(rng.uniform(0.5, 1.0)),
                        int(rng.integers(0, 6)))  # fmt: skip
            applied.append("overlay")
        if draw["pip"] and host is not None:
            side = float(rng.uniform(0.4, 0.75))
            top, left = float(rng.uniform(0, 1 - side)), float(rng.uniform(0, 1 - side))
            canvas = host[: len(v)] if len(host) >= len(v) else host[np.arange(len(v)) % len(host)]
            v = place(v, (top, left, top + side, left + side), canvas)
            applied.append("pip")
        x = x.copy()
        x[vm] = v
    if am.any():
        mel = a[am]
        if draw["gain"]:
            mel = mel_gain(mel, float(rng.uniform(-20, 10)))
            applied.append("gain")
        if draw["lowpass"]:
            mel = mel_lowpass(mel, float(rng.uniform(0.4, 0.85)))
            applied.append("lowpass")
        if draw["noise"]:
            mel = mel_noise(mel, float(rng.uniform(0, 25)), rng)
            applied.append("noise")
        a = a.copy()
        a[am] = mel
    return View(x, a.astype(np.float32, copy=False), vm, am, applied)


def _small_box(rng: np.random.Generator) -> Box:
    """A corner logo or a caption strip."""
    if rng.random() < 0.5:
        s = rng.uniform(0.1, 0.3)
        top, left = (
            (0.03 if rng.random() < 0.5 else 0.97 - s),
            (0.03 if rng.random() < 0.5 else 0.97 - s),
        )
        return (top, left, top + s, left + s)
    h = rng.uniform(0.08, 0.2)
    top = 0.97 - h if rng.random() < 0.7 else 0.03
    return (top, 0.05, top + h, 0.95)


def views(
    windows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    media: MediaConfig,
    scales: Sequence[float] = (1.0, 1.0),
) -> list[list[View]]:
    """One :func:`random_view` of each window per entry of ``scales``, view ``j`` drawing each
    edit with ``scales[j]`` times its :data:`VIEW_EDITS` probability (0: the window as it is),
    within a scope drawn from :data:`SCOPES`.
    The host of a picture-in-picture is the next window of the batch."""
    out: list[list[View]] = []
    for i, (f, a, vm, am) in enumerate(windows):
        nf, _, nvm, _ = windows[(i + 1) % len(windows)]
        host = nf[nvm] if len(windows) > 1 and nvm.any() else None
        out.append([
            random_view(f, a, vm, am, rng, media, host=host, scopes=SCOPES,
                        probabilities={k: p * scale for k, p in VIEW_EDITS.items()})
            for scale in scales
        ])  # fmt: skip
    return out
