"""Which decoder backend decodes a file: ``PEMT_DECODER=auto|cpu|nvdec`` (torch-free).

- ``cpu``: PyAV (FFmpeg) on the CPU, always.
- ``nvdec``: NVIDIA's hardware decoder through PyNvVideoCodec, frames converted on the GPU
  (``pemt.media._nvdec``). The machine must be able to (PyNvVideoCodec importable, a CUDA GPU
  through torch): otherwise :class:`DecoderUnavailableError` says what is missing.
- ``auto`` (default): ``nvdec`` where the machine can, else ``cpu``, with one log line.

Per file, NVDEC takes 8-bit 4:2:0 video of the codecs it decodes (H.264, HEVC, AV1, VP8, VP9,
MPEG-1/2/4, VC-1) given as a path or bytes; anything else (other codecs, 10-bit or 4:4:4,
odd sizes, audio-only files, file objects, the spread layout) is decoded by PyAV, with a log
line naming the reason. Both backends give the same windows (``docs/ARCHITECTURE.md``,
"GPU path").
"""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from typing import Any

__all__ = [
    "DECODERS",
    "DecoderUnavailableError",
    "decoder_setting",
    "nvdec_available",
    "open_segments",
    "resolve_decoder",
]

log = logging.getLogger("pemt.media")

DECODERS = ("auto", "cpu", "nvdec")
ENV = "PEMT_DECODER"


class DecoderUnavailableError(RuntimeError):
    """``nvdec`` was asked for on a machine that cannot run it (not a problem of the file)."""


def decoder_setting(name: str | None = None) -> str:
    """``name``, else ``$PEMT_DECODER``, else ``auto``; checked against :data:`DECODERS`."""
    value = (name if name is not None else os.environ.get(ENV, "auto")).strip().lower()
    if value not in DECODERS:
        where = "decoder" if name is not None else ENV
        raise ValueError(f"{where}={value!r} is not one of {list(DECODERS)}")
    return value


@lru_cache(maxsize=1)
def nvdec_available() -> tuple[bool, str]:
    """(can this process decode with NVDEC, why not). Imports torch and PyNvVideoCodec only
    when both are installed; the answer is cached for the process."""
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        return False, "PyNvVideoCodec is not installed (pip install 'pemt[gpu]')"
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch"
    try:
        from pemt.media._nvdec import import_nvc

        import_nvc()
    except Exception as e:  # noqa: BLE001 - any failure to load the library means "not here"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return False, f"PyNvVideoCodec cannot load ({first})"
    return True, ""


def resolve_decoder(name: str | None = None) -> str:
    """``"cpu"`` or ``"nvdec"`` for the setting ``name`` (None: ``$PEMT_DECODER``)."""
    setting = decoder_setting(name)
    if setting == "cpu":
        return "cpu"
    ok, why = nvdec_available()
    if ok:
        return "nvdec"
    if setting == "nvdec":
        raise DecoderUnavailableError(
            f"{ENV}=nvdec, but NVDEC cannot be used on this machine: {why}. Install the GPU "
            "extra (pip install 'pemt[gpu]') on a machine with an NVIDIA GPU and driver, or set "
            f"{ENV}=auto (falls back to PyAV) or {ENV}=cpu"
        )
    _log_auto_fallback(why)
    return "cpu"


@lru_cache(maxsize=1)
def _log_auto_fallback(why: str) -> None:
    log.info("%s=auto: decoding with PyAV on the CPU (NVDEC unavailable: %s)", ENV, why)


def open_segments(
    source: Any,
    cfg: Any,
    limits: Any = None,
    *,
    require_audio: bool = False,
    require_video: bool = False,
    decoder: str | None = None,
    device_frames: bool = False,
) -> Any:
    """A :class:`pemt.media._decode.SegmentStream` from the backend ``decoder`` resolves to
    (see the module docstring). ``device_frames``: with NVDEC, segment frames stay CUDA
    tensors; PyAV always gives numpy."""
    from pemt.media._decode import SegmentStream

    if resolve_decoder(decoder) == "nvdec":
        from pemt.media._nvdec import NvdecSegmentStream, NvdecUnsupported

        try:
            return NvdecSegmentStream(
                source,
                cfg,
                limits,
                require_audio=require_audio,
                require_video=require_video,
                keep_on_device=device_frames,
            )
        except NvdecUnsupported as e:
            log.info("decoding %s with PyAV: %s", _describe(source), e)
    return SegmentStream(
        source, cfg, limits, require_audio=require_audio, require_video=require_video
    )


def _describe(source: Any) -> str:
    if isinstance(source, bytes | bytearray):
        return f"{len(source)} bytes"
    return repr(os.fspath(source)) if isinstance(source, str | os.PathLike) else "a file object"
