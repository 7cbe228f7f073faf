"""Log-mel spectrogram in numpy, computed as AVBERT computes it with torchaudio's defaults.

AVBERT (``data/transform.py``) calls ``torchaudio.transforms.MelSpectrogram(44100,
n_fft=n_fft, n_mels=80)`` on each segment's mono waveform, then takes ``log(1e-6 + mel)`` and
cuts or zero-pads the result to ``AUDIO_TIME`` (128) frames. With torchaudio's defaults that is:

- ``n_fft = 2 * (samples // audio_frames + 1)`` from the waveform's own length (a shorter last
  segment gets a smaller FFT), ``hop = n_fft // 2``, window = periodic Hann of ``n_fft``;
- centred frames with reflect padding of ``n_fft // 2`` on both sides, so a waveform of
  ``samples`` gives ``1 + samples // hop`` frames (``audio_frames`` for a whole segment);
- power spectrum; triangular mel filters on the HTK scale between 0 and ``sample_rate // 2``,
  not area-normalized (``mel_scale`` / ``mel_norm`` select librosa's Slaney variants instead);
- frames beyond ``audio_frames`` are cut, missing ones stay ``0.0`` (not ``log(1e-6)``).

Golden values from AVBERT's recipe: ``tests/test_avbert_golden.py``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pemt.config import MediaConfig

__all__ = ["hann_window", "log_mel", "mel_filterbank", "segment_log_mel"]

LOG_OFFSET = 1e-6

# Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, scale: str = "htk") -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float, scale: str = "htk") -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    hz = mel * _F_SP
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


@lru_cache(maxsize=32)
def _filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, scale: str, norm: str
) -> np.ndarray:
    # float32, as torchaudio builds it: the small weights at the edges of the narrow low filters
    # are differences of large frequencies, and float64 would move them by up to 10%
    f32 = np.float32
    fft_hz = np.linspace(0.0, sample_rate // 2, 1 + n_fft // 2).astype(f32)  # torchaudio: sr // 2
    mels = np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2).astype(f32)
    if scale == "htk":
        mel_hz = f32(700.0) * (f32(10.0) ** (mels / f32(2595.0)) - f32(1.0))
    else:
        mel_hz = mel_to_hz(mels, scale).astype(f32)
    width = np.diff(mel_hz)  # (n_mels + 1,)
    ramps = mel_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, bins)
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    weights = np.maximum(f32(0.0), np.minimum(lower, upper))  # (n_mels, bins)
    if norm == "slaney":
        weights *= (f32(2.0) / (mel_hz[2:] - mel_hz[:-2]))[:, None]  # area normalization
    weights = weights.astype(np.float64)
    weights.setflags(write=False)
    return weights


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    *,
    scale: str = "htk",
    norm: str = "none",
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Triangular mel filters, ``(n_mels, 1 + n_fft // 2)`` (read-only; float32 values held as
    float64). Defaults are torchaudio's: HTK scale, no normalization, 0 to ``sample_rate // 2``
    Hz."""
    fmax = float(sample_rate // 2) if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}")
    if scale not in ("htk", "slaney") or norm not in ("none", "slaney"):
        raise ValueError(
            f"scale must be 'htk' or 'slaney' and norm 'none' or 'slaney', got {scale!r}, {norm!r}"
        )
    return _filterbank(int(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax, scale, norm)


@lru_cache(maxsize=32)
def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window of length ``n`` (``torch.hann_window(n, periodic=True)``)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


def check_media_config(media_cfg: object) -> None:
    if not isinstance(media_cfg, MediaConfig):
        raise TypeError(
            f"expected a MediaConfig (pass cfg.media of a ModelConfig), got {type(media_cfg).__name__}"
        )


def _as_samples(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(
            f"samples must be mono, shape (N,), got shape {x.shape}; average channels first"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"samples must be floats in [-1, 1], got dtype {x.dtype}; divide int16 by 32768"
        )
    return x.astype(np.float64, copy=False)


def _log_mel_batch(x: np.ndarray, cfg: MediaConfig) -> np.ndarray:
    """Waveforms of one length ``x`` (K, N), N >= 3 -> log-mel (K, n_mels, audio_frames) float32."""
    n = x.shape[-1]
    n_fft = cfg.n_fft_for(n)
    hop = n_fft // 2
    padded = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")  # (K, N + n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]
    spec = np.fft.rfft(frames * hann_window(n_fft), axis=-1)  # (K, 1 + N // hop, bins)
    power = spec.real**2 + spec.imag**2
    fb = mel_filterbank(cfg.sample_rate, n_fft, cfg.n_mels, scale=cfg.mel_scale, norm=cfg.mel_norm)
    mel = np.log(LOG_OFFSET + power @ fb.T).swapaxes(-1, -2)  # (K, n_mels, frames)
    out = np.zeros((len(x), cfg.n_mels, cfg.audio_frames), np.float32)
    keep = min(cfg.audio_frames, mel.shape[-1])
    out[..., :keep] = mel[..., :keep]
    return out


def log_mel(samples: np.ndarray, media_cfg: MediaConfig) -> np.ndarray:
    """Log-mel spectrogram of one segment's mono ``samples`` (N,) at ``media_cfg.sample_rate``:
    float32 ``(n_mels, audio_frames)``. A waveform too short to frame (N < 3) gives zeros."""
    check_media_config(media_cfg)
    x = _as_samples(samples)
    if len(x) < 3:
        return np.zeros((media_cfg.n_mels, media_cfg.audio_frames), np.float32)
    return _log_mel_batch(x[None], media_cfg)[0]


def segment_log_mel(samples: np.ndarray, media_cfg: MediaConfig) -> np.ndarray:
    """Log-mel per segment: float32 ``(T, n_mels, audio_frames)`` with
    ``T = ceil(N / audio_samples_per_segment)``. Segment ``t`` equals
    ``log_mel(samples[t * S:(t + 1) * S])``: a shorter last segment is transformed as it is
    (its own n_fft, missing frames 0.0), as AVBERT transforms the end of a video."""
    check_media_config(media_cfg)
    x = _as_samples(samples)
    s = media_cfg.audio_samples_per_segment
    full, rest = divmod(len(x), s)
    parts = []
    if full:
        parts.append(_log_mel_batch(x[: full * s].reshape(full, s), media_cfg))
    if rest:
        parts.append(log_mel(x[full * s :], media_cfg)[None])
    if not parts:
        return np.zeros((0, media_cfg.n_mels, media_cfg.audio_frames), np.float32)
    return np.concatenate(parts)
