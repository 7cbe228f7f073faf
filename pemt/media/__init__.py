"""Torch-free media preprocessing shared by training and serving (see docs/ARCHITECTURE.md).

Decode any file FFmpeg reads (PyAV) into segments of ``frames_per_segment`` uint8 RGB frames at
``fps`` (short side resized to ``image_size``, centre crop) and a log-mel of the same span, then
into model windows of ``num_segments`` segments (``layout``: back to back, or spread over the
whole video as AVBERT tests)::

    from pemt.config import get_config
    from pemt.media import batch_windows, load_windows

    cfg = get_config("paper")
    windows = load_windows("clip.mp4", cfg.media)
    inputs = batch_windows(windows, cfg.media)  # keys/dtypes/shapes = pemt.spec.model_inputs

Bad input raises a :class:`MediaError` subclass whose ``code`` is stable. Test media:
:mod:`pemt.media.encode`. The video decoder is PyAV or, on a GPU, NVDEC (``PEMT_DECODER``,
``decoder=``; ``pemt.media._select``): both give the same windows.
"""

from __future__ import annotations

from pemt.media._audio import log_mel, mel_filterbank, segment_log_mel
from pemt.media._decode import DecodeLimits, MediaInfo, Source, probe
from pemt.media._errors import (
    CorruptMediaError,
    DecodeTimeoutError,
    EmptyMediaError,
    LimitError,
    MediaError,
    MissingModalityError,
    NoStreamError,
    NotMediaError,
)
from pemt.media._select import DECODERS, DecoderUnavailableError, resolve_decoder
from pemt.media._spread import SegmentPlan, spread_plan
from pemt.media._windows import Window, batch_windows, iter_windows, load_windows

__all__ = [
    "CorruptMediaError",
    "DECODERS",
    "DecodeLimits",
    "DecodeTimeoutError",
    "DecoderUnavailableError",
    "EmptyMediaError",
    "LimitError",
    "MediaError",
    "MediaInfo",
    "MissingModalityError",
    "NoStreamError",
    "NotMediaError",
    "SegmentPlan",
    "Source",
    "Window",
    "batch_windows",
    "iter_windows",
    "load_windows",
    "log_mel",
    "mel_filterbank",
    "probe",
    "resolve_decoder",
    "segment_log_mel",
    "spread_plan",
]
