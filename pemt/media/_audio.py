"""Log-mel spectrogram in numpy, as AVBERT computes it: periodic Hann window, no centre padding,
power spectrum, Slaney mel filterbank (librosa's default: ``htk=False, norm="slaney"``),
``log(1e-6 + mel)``."""

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


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


@lru_cache(maxsize=16)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fft_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    width = np.diff(mel_hz)  # (n_mels + 1,)
    ramps = mel_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, bins)
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, bins)
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]  # Slaney area normalization
    weights.setflags(write=False)
    return weights


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney-style triangular mel filters, ``(n_mels, 1 + n_fft // 2)`` float64 (read-only)."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}")
    return _filterbank(int(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax)


@lru_cache(maxsize=16)
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


def _log_mel_frames(frames: np.ndarray, cfg: MediaConfig) -> np.ndarray:
    """``frames`` (..., n_frames, n_fft) -> log-mel (..., n_mels, n_frames) float32."""
    spec = np.fft.rfft(frames * hann_window(cfg.n_fft), axis=-1)
    power = spec.real**2 + spec.imag**2  # (..., n_frames, bins)
    mel = (
        power @ mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels).T
    )  # (..., n_frames, n_mels)
    return np.log(LOG_OFFSET + mel).swapaxes(-1, -2).astype(np.float32)


def log_mel(samples: np.ndarray, media_cfg: MediaConfig) -> np.ndarray:
    """Log-mel spectrogram of mono ``samples`` (N,) at ``media_cfg.sample_rate``.

    Returns float32 ``(n_mels, 1 + (N - n_fft) // hop_length)``; zero frames when N < n_fft.
    """
    check_media_config(media_cfg)
    x = _as_samples(samples)
    if len(x) < media_cfg.n_fft:
        return np.zeros((media_cfg.n_mels, 0), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, media_cfg.n_fft)[:: media_cfg.hop_length]
    return _log_mel_frames(frames, media_cfg)


def segment_log_mel(samples: np.ndarray, media_cfg: MediaConfig) -> np.ndarray:
    """Log-mel per one-second segment: float32 ``(T, n_mels, A)``.

    ``T = ceil(N / audio_samples_per_segment)``; the last segment is zero-padded.
    ``A = media_cfg.audio_frames_per_segment``. Segment ``t`` equals
    ``log_mel(samples[t * S:(t + 1) * S])``.
    """
    check_media_config(media_cfg)
    x = _as_samples(samples)
    s = media_cfg.audio_samples_per_segment
    t = -(-len(x) // s)
    if t == 0:
        return np.zeros((0, media_cfg.n_mels, media_cfg.audio_frames_per_segment), np.float32)
    if len(x) < t * s:
        x = np.concatenate([x, np.zeros(t * s - len(x))])
    segs = x.reshape(t, s)  # (T, S)
    frames = np.lib.stride_tricks.sliding_window_view(segs, media_cfg.n_fft, axis=-1)
    frames = frames[:, :: media_cfg.hop_length]  # (T, A, n_fft)
    out = _log_mel_frames(frames, media_cfg)  # (T, n_mels, A)
    assert out.shape[-1] == media_cfg.audio_frames_per_segment, out.shape
    return out
