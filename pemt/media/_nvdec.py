"""The NVDEC decoder backend: PyNvVideoCodec decodes the video on the GPU, torch converts it.

Imported only when ``PEMT_DECODER`` resolves to ``nvdec`` (``pemt.media._select``): this is the
one module of ``pemt.media`` that imports torch. It produces exactly the segments of the PyAV
path because it shares everything but the pixels' source:

- the container is opened, checked and limited by the same ``_Opened`` (same errors), the
  audio is decoded by PyAV from that container, and segments are paired by the same
  ``SegmentStream`` code;
- frames are chosen by the same :class:`pemt.media._geometry.SlotClock` from their
  presentation times;
- each chosen NV12 frame is scaled with swscale's area filter (as two matrix products with
  :func:`~pemt.media._geometry.area_weights`), cropped at the same place
  (:func:`~pemt.media._geometry.scaled_size`, :func:`~pemt.media._geometry.crop_offset`) and
  converted with the matrix and range swscale would read from the stream's tags
  (:func:`~pemt.media._geometry.color_spec`). Against swscale on the same decoded YUV this is
  within 1 level (measured: ``bench/results/gpu_path.md``).

Frames stay on the GPU when ``keep_on_device`` is set (``Window.frames`` is then a CUDA uint8
tensor for the model in the same process); otherwise they are copied to numpy.
:class:`TorchConverter` runs on any torch device, and ``frames="pyav"`` feeds it NV12 frames
decoded by PyAV, so the conversion and the whole stream are tested on machines without a GPU.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from pemt.config import MediaConfig
from pemt.media._decode import (
    THUMBNAIL_SIZE,
    DecodeLimits,
    SegmentStream,
    Source,
    _Opened,
    _reason,
    _rotation,
)
from pemt.media._errors import CorruptMediaError, MediaError
from pemt.media._geometry import (
    ColorSpec,
    area_weights,
    chroma_weights,
    color_spec,
    crop_offset,
    scaled_size,
)
from pemt.media._geometry import yuv_to_rgb as _yuv_to_rgb

__all__ = [
    "NVDEC_CODECS",
    "NvdecSegmentStream",
    "NvdecUnsupported",
    "TorchConverter",
    "import_nvc",
    "nvdec_reason",
]

# FFmpeg codec names NVDEC decodes (PyNvVideoCodec 2.x: H.264, HEVC, AV1, VP8, VP9, VC-1,
# MPEG-4, MPEG-2, MPEG-1); 8-bit 4:2:0 only, which NV12 holds
NVDEC_CODECS = frozenset(
    {"h264", "hevc", "av1", "vp8", "vp9", "vc1", "mpeg4", "mpeg2video", "mpeg1video"}
)
_PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "nv12"})


class NvdecUnsupported(Exception):
    """This file (or this machine) is not for NVDEC; the message says why. Callers decode the
    file with PyAV instead."""


def import_nvc() -> Any:
    """The PyNvVideoCodec module. Its package refuses to import where the NVENC library is
    missing (encode-less GPUs and containers without the ``video`` driver capability) even
    though decoding needs only NVDEC; then its extension is loaded directly."""
    try:
        import PyNvVideoCodec as nvc

        return nvc
    except RuntimeError as e:
        if "nvidia-encode" not in str(e) and "NVENC" not in str(e):
            raise
        spec = importlib.util.find_spec("PyNvVideoCodec")
        if spec is None or not spec.submodule_search_locations:
            raise
        folder = Path(next(iter(spec.submodule_search_locations)))
        cuda_major = int((torch.version.cuda or "12").split(".")[0])
        order = ("_130", "_121") if cuda_major >= 13 else ("_121", "_130")
        for suffix in order:
            for path in sorted(folder.glob(f"PyNvVideoCodec{suffix}.*.so")):
                ext_spec = importlib.util.spec_from_file_location("_PyNvVideoCodec", path)
                assert ext_spec is not None and ext_spec.loader is not None
                module = importlib.util.module_from_spec(ext_spec)
                ext_spec.loader.exec_module(module)
                return module
        raise


def nvdec_reason(opened: _Opened) -> str | None:
    """Why NVDEC cannot decode this container's video, or None when it can."""
    v = opened.video
    if v is None:
        return "no video stream"
    cc = v.codec_context
    if cc.name not in NVDEC_CODECS:
        return f"NVDEC does not decode {cc.name}"
    pix = cc.pix_fmt or ""
    if pix not in _PIX_FMTS:
        return f"pixel format {pix or 'unknown'} is not 8-bit 4:2:0"
    if cc.width % 2 or cc.height % 2:
        return f"odd frame size {cc.width}x{cc.height}"
    return None


# --- colour conversion and geometry on a torch device ----------------------------------------


class TorchConverter:
    """NV12 frames ``(3H/2, W)`` uint8 -> segment tensors, on ``device``.

    ``crop`` defers the work: ``stack`` converts a segment's distinct frames in one batch
    (scale = ``Wy @ Y @ Wx^T`` per plane with the area weights restricted to the crop window,
    then the YUV -> RGB matrix, rounding half up). The frame converter protocol of
    ``pemt.media._decode``."""

    def __init__(
        self,
        size: int,
        sar: Fraction | None,
        rotation: int,
        color: ColorSpec,
        device: torch.device,
        keep_on_device: bool,
    ) -> None:
        self.size, self.sar, self.rotation = size, sar, rotation
        self.device, self.keep = device, keep_on_device
        m, off = _yuv_to_rgb(color)
        self.matrix = torch.from_numpy(m).to(device)  # (3, 3)
        self.offsets = torch.from_numpy(off).to(device)  # (3,)
        self.chroma_shift = -0.25 if color.chroma_left else 0.0
        self._weights: dict[tuple[int, ...], tuple[torch.Tensor, ...]] = {}

    def crop(self, frame: torch.Tensor) -> torch.Tensor:
        return frame

    def stack(self, crops: list[torch.Tensor]) -> Any:
        slot: dict[int, int] = {}
        distinct: list[torch.Tensor] = []
        for c in crops:
            if id(c) not in slot:
                slot[id(c)] = len(distinct)
                distinct.append(c)
        rgb = self.convert(torch.stack(distinct), self.size, 1 << 30, crop=True)  # (N, S, S, 3)
        index = torch.tensor([slot[id(c)] for c in crops], device=rgb.device)
        out = rgb.index_select(0, index)  # (F, S, S, 3)
        return out if self.keep else out.cpu().numpy()

    def thumbnail(self, frame: torch.Tensor) -> np.ndarray:
        img = self.convert(frame[None], THUMBNAIL_SIZE, 4 * THUMBNAIL_SIZE, crop=False)[0]
        return np.ascontiguousarray(img.cpu().numpy())

    def new_frames(self, shape: tuple[int, ...]) -> Any:
        if self.keep:
            return torch.zeros(shape, dtype=torch.uint8, device=self.device)
        return np.zeros(shape, np.uint8)

    def _plan(self, h: int, w: int, short: int, cap: int, crop: bool) -> tuple[torch.Tensor, ...]:
        key = (h, w, short, cap, int(crop))
        if key not in self._weights:
            tw, th = scaled_size(w, h, self.sar, self.rotation, short, cap)
            wy, wx = area_weights(h, th), area_weights(w, tw)
            cy = area_weights(h // 2, th)
            cx = chroma_weights(w // 2, tw, self.chroma_shift, pairs=True)
            if crop and not self.rotation % 360:  # fold the crop into the weights
                y0, x0 = crop_offset(th, self.size), crop_offset(tw, self.size)
                rows, cols = slice(y0, y0 + self.size), slice(x0, x0 + self.size)
                wy, cy, wx, cx = wy[rows], cy[rows], wx[cols], cx[cols]
            self._weights[key] = tuple(
                torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in (wy, wx, cy, cx)
            )
        return self._weights[key]

    def convert(self, nv12: torch.Tensor, short: int, cap: int, crop: bool) -> torch.Tensor:
        """(N, 3H/2, W) uint8 NV12 -> (N, h, w, 3) uint8 RGB: short side ``short`` (long side
        floored, at most ``cap``), rotated for display, centre-cropped to ``size`` if ``crop``."""
        n, rows, w = nv12.shape
        h = rows * 2 // 3
        wy, wx, cy, cx = self._plan(h, w, short, cap, crop)
        luma = nv12[:, :h].float()  # (N, H, W)
        chroma = nv12[:, h:].reshape(n, h // 2, w // 2, 2).float()  # (N, H/2, W/2, 2)
        y = wy @ luma @ wx.T  # (N, h', w')
        u = cy @ chroma[..., 0] @ cx.T
        v = cy @ chroma[..., 1] @ cx.T
        yuv = torch.stack([y, u, v], dim=-1) - self.offsets  # (N, h', w', 3)
        rgb = (yuv @ self.matrix.T + 0.5).floor().clamp_(0, 255).to(torch.uint8)
        if self.rotation % 360:
            rgb = torch.rot90(rgb, (self.rotation // 90) % 4, dims=(1, 2))  # counter-clockwise
            if crop:
                s = self.size
                y0, x0 = crop_offset(rgb.shape[1], s), crop_offset(rgb.shape[2], s)
                rgb = rgb[:, y0 : y0 + s, x0 : x0 + s]
        return rgb.contiguous()


# --- where NV12 frames come from ------------------------------------------------------------


def _current_context() -> int:
    """The CUDA driver context current on this thread (torch's primary context), or 0."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        ctx = ctypes.c_void_p()
        if cuda.cuCtxGetCurrent(ctypes.byref(ctx)) == 0 and ctx.value:
            return int(ctx.value)
    except OSError:
        pass
    return 0


class _Feeder:
    """Hands the bytes of an in-memory file to PyNvVideoCodec's demuxer chunk by chunk."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def feed(self, buffer: Any) -> int:
        n = min(len(buffer), len(self.data) - self.pos)
        if n > 0:
            buffer[:n] = self.data[self.pos : self.pos + n]
            self.pos += n
        return max(n, 0)


def _nv12_tensor(frame: Any, device: torch.device) -> torch.Tensor:
    """A decoded NVDEC frame as an owned (3H/2, W) uint8 tensor (the decoder reuses its
    surfaces, so the pixels are copied: 1.4 MB for 720p, device to device)."""
    try:
        t = torch.from_dlpack(frame)
    except Exception:  # noqa: BLE001 - older builds: planes through the CUDA array interface
        planes = frame.cuda()
        luma = torch.as_tensor(planes[0], device=device)
        chroma = torch.as_tensor(planes[1], device=device)
        h, w = luma.shape[0], luma.shape[1]
        return torch.cat([luma.reshape(h, w), chroma.reshape(h // 2, w)], dim=0)
    if t.ndim == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.ndim != 2 or t.shape[0] % 3:
        raise CorruptMediaError(f"NVDEC returned a frame of shape {tuple(t.shape)}, not NV12")
    return t.clone()


def _nvdec_frames(
    source: Source, time_base: Fraction, device: torch.device, name: str
) -> Iterator[tuple[torch.Tensor, float | None]]:
    """(NV12 frame on ``device``, presentation time in seconds) in display order, decoded by
    NVDEC from PyNvVideoCodec's own demuxer of the same file."""
    nvc = import_nvc()
    torch.cuda.set_device(device)
    torch.zeros(1, device=device)  # makes torch's context current on this thread
    try:
        feeder = None
        if isinstance(source, bytes | bytearray):
            feeder = _Feeder(bytes(source))
            demux = nvc.CreateDemuxer(feeder.feed)
        else:
            demux = nvc.CreateDemuxer(filename=os.fspath(source))  # type: ignore[arg-type]
        decoder = nvc.CreateDecoder(
            gpuid=device.index or 0,
            codec=demux.GetNvCodecId(),
            cudacontext=_current_context(),
            cudastream=torch.cuda.current_stream(device).cuda_stream,
            usedevicememory=True,
        )
    except Exception as e:  # noqa: BLE001 - the library's own exception types vary by version
        raise CorruptMediaError(f"{name}: NVDEC cannot open the video ({_reason(e)})") from None
    tb = time_base
    try:
        num, den = int(demux.GetTimebaseNum()), int(demux.GetTimebaseDen())
        if num > 0 and den > 0:
            tb = Fraction(num, den)
    except Exception:  # noqa: BLE001 - older builds have no time base getters
        pass

    def frames(packet: Any) -> list[Any]:
        try:
            return list(decoder.Decode(packet))
        except Exception as e:  # noqa: BLE001
            raise CorruptMediaError(
                f"{name} cannot be decoded by NVDEC ({_reason(e)}); the file is damaged or "
                "truncated: re-export or re-upload it"
            ) from None

    for packet in demux:
        for f in frames(packet):
            pts = f.getPTS()
            yield _nv12_tensor(f, device), (None if pts is None or pts < 0 else float(pts * tb))
    try:  # flush what the decoder still holds (a no-op if the demuxer's last packet did)
        tail = list(decoder.Decode(nvc.PacketData()))
    except Exception:  # noqa: BLE001
        tail = []
    for f in tail:
        pts = f.getPTS()
        yield _nv12_tensor(f, device), (None if pts is None or pts < 0 else float(pts * tb))
    del feeder


def _pyav_frames(
    source: Source, limits: DecodeLimits, device: torch.device
) -> Iterator[tuple[torch.Tensor, float | None]]:
    """The same frames decoded by PyAV and repacked to NV12 without scaling (exact): the
    reference source of the NVDEC backend, for machines without a GPU and for checks."""
    o = _Opened(source, limits)
    try:
        assert o.video is not None
        for packet in o.container.demux(o.video):
            for frame in packet.decode():
                nv12 = frame.to_ndarray(format="nv12")  # (3H/2, W)
                yield torch.from_numpy(nv12).to(device), frame.time
    finally:
        o.close()


def _merge(*streams: Iterator[tuple[str, Any, float | None, float]]) -> Iterator[Any]:
    """Events of several time-ordered streams, in time order (None times go last)."""
    heads = [next(s, None) for s in streams]
    while any(h is not None for h in heads):
        live = [(i, h) for i, h in enumerate(heads) if h is not None]
        i, head = min(live, key=lambda x: float("inf") if x[1][2] is None else x[1][2])
        yield head
        heads[i] = next(streams[i], None)


# --- the segment stream -----------------------------------------------------------------------


class NvdecSegmentStream(SegmentStream):
    """:class:`pemt.media._decode.SegmentStream` with the video decoded by NVDEC (``frames=
    "nvdec"``) or, as its reference, by PyAV into NV12 (``frames="pyav"``), and converted by
    :class:`TorchConverter` on ``device``. Raises :class:`NvdecUnsupported` (the file closed)
    when NVDEC cannot take this file; :class:`~pemt.media.MediaError` as the PyAV path does."""

    backend = "nvdec"

    def __init__(
        self,
        source: Source,
        cfg: MediaConfig,
        limits: DecodeLimits | None = None,
        *,
        require_audio: bool = False,
        require_video: bool = False,
        device: str | torch.device | None = None,
        keep_on_device: bool = False,
        frames: str = "nvdec",
    ) -> None:
        if frames not in ("nvdec", "pyav"):
            raise ValueError(f"frames={frames!r} is not 'nvdec' or 'pyav'")
        if not isinstance(source, str | os.PathLike | bytes | bytearray):
            raise NvdecUnsupported("a file object (NVDEC reads a path or bytes)")
        self._source = source
        self._frames = frames
        self._device = torch.device(device or ("cuda" if frames == "nvdec" else "cpu"))
        self._keep = keep_on_device
        try:
            super().__init__(
                source, cfg, limits, require_audio=require_audio, require_video=require_video
            )
        except NvdecUnsupported:
            self.opened.close()
            raise

    def _converter(self) -> TorchConverter:
        o = self.opened
        reason = nvdec_reason(o)
        if reason is not None:
            raise NvdecUnsupported(reason)
        assert o.video is not None
        cc = o.video.codec_context
        color = color_spec(
            getattr(cc, "colorspace", None), getattr(cc, "color_range", None), cc.pix_fmt or "",
            cc.name,
        )  # fmt: skip
        return TorchConverter(
            self.cfg.image_size,
            o.video.sample_aspect_ratio,
            self._first_rotation(),
            color,
            self._device,
            self._keep,
        )

    def _first_rotation(self) -> int:
        """The display rotation, read from the first frame as the PyAV path reads it."""
        o = _Opened(self._source, self.opened.limits)
        try:
            assert o.video is not None
            for packet in o.container.demux(o.video):
                for frame in packet.decode():
                    return _rotation(frame)
        except MediaError:
            raise
        except Exception:  # noqa: BLE001 - an undecodable first frame: no rotation to read
            return 0
        finally:
            o.close()
        return 0

    def _events(self) -> Iterator[tuple[str, Any, float | None, float]]:
        o, v = self.opened, self.video
        assert o.video is not None and v is not None
        t0 = o.t0 if o.t0 is not None else 0.0
        step = 1.0 / self._video_rate if self._video_rate else v.seg / v.f
        if self._frames == "nvdec":
            tb = o.video.time_base or Fraction(1, 90000)
            source = _nvdec_frames(self._source, tb, self._device, self.name)
        else:
            source = _pyav_frames(self._source, o.limits, self._device)

        def video() -> Iterator[tuple[str, Any, float | None, float]]:
            last: float | None = None
            for nv12, t in source:
                o.budget.check()
                o.check_pixels(nv12.shape[1], nv12.shape[0] * 2 // 3)
                if t is None:
                    t = (last + step) if last is not None else t0
                last = t
                yield "v", nv12, t - t0, step

        def audio() -> Iterator[tuple[str, Any, float | None, float]]:
            if o.audio is None:
                return
            for packet in o.container.demux(o.audio):
                o.budget.check()
                for frame in packet.decode():
                    if isinstance(frame, av.AudioFrame):
                        t = frame.time
                        yield "a", frame, None if t is None else t - t0, 0.0

        yield from _merge(video(), audio())
