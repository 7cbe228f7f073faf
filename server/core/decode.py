"""Decoding off the event loop, one short-lived process per upload.

A decoder that hangs or crashes on a hostile file takes down only its own process: the parent
waits ``timeout_s`` and kills it. Processes come from a forkserver that has already imported
numpy, PyAV and pemt.media, so a job starts in milliseconds. ``slots`` bounds how many decode at
once. Results (model inputs, window times, JPEG thumbnails) come back over a pipe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from pemt.config import MediaConfig
from server.core.errors import InvalidRequest, MediaRejected

__all__ = ["DecodePool", "DecodeRequest", "DecodeResult", "WindowInfo", "jpeg_bytes"]

_PRELOAD = ["numpy", "av", "pemt.media", "server.core.decode"]


@dataclass(frozen=True)
class DecodeRequest:
    path: str
    media: MediaConfig
    window_segments: int | None = None  # fewer real segments per window than the model's T
    stride_s: float | None = None
    max_bytes: int | None = None
    max_duration_s: float | None = None
    max_pixels: int | None = None
    time_budget_s: float | None = None
    require_audio: bool = False
    require_video: bool = False
    decoder: str = "cpu"  # "cpu" | "nvdec", resolved once at start-up (pemt.media)


@dataclass(frozen=True)
class WindowInfo:
    index: int
    start: float
    end: float
    has_audio: bool
    has_video: bool


@dataclass
class DecodeResult:
    inputs: dict[str, np.ndarray]  # pemt.spec.model_inputs, batch = windows
    windows: list[WindowInfo]
    thumbnails: list[bytes | None]
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def jpeg_bytes(rgb: np.ndarray | None, quality: int = 6) -> bytes | None:
    """Encode an (H, W, 3) uint8 RGB image as JPEG with PyAV's mjpeg encoder (no extra deps)."""
    if rgb is None or rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 2:
        return None
    import av

    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"qmin": str(quality), "qmax": str(quality)}
    frame = av.VideoFrame.from_ndarray(
        np.ascontiguousarray(rgb[:h, :w], dtype=np.uint8), format="rgb24"
    )
    packets = list(ctx.encode(frame.reformat(format="yuvj420p"))) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets) or None


def _pad_segments(inputs: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """Pad axis 1 (segments) up to the model's T; padding is masked out."""
    out = {}
    for k, v in inputs.items():
        if v.shape[1] >= t:
            out[k] = v
            continue
        pad = [(0, 0)] * v.ndim
        pad[1] = (0, t - v.shape[1])
        out[k] = np.pad(v, pad)  # zeros; masks pad with False
    return out


def decode_file(req: DecodeRequest) -> DecodeResult:
    """Decode in this process (the child of the pool; also used by the benchmark)."""
    from pemt.media import DecodeLimits, batch_windows, load_windows

    t0 = time.perf_counter()
    media = req.media
    if req.window_segments is not None and req.window_segments != media.num_segments:
        media = dataclasses.replace(media, num_segments=req.window_segments)
    given: dict[str, Any] = {
        "max_bytes": req.max_bytes,
        "max_duration_s": req.max_duration_s,
        "max_pixels": req.max_pixels,
        "time_budget_s": req.time_budget_s,
    }
    limits = DecodeLimits(**{k: v for k, v in given.items() if v is not None})
    windows = load_windows(
        req.path,
        media,
        stride_s=req.stride_s,
        limits=limits,
        require_audio=req.require_audio,
        require_video=req.require_video,
        decoder=req.decoder,
    )
    if not windows:
        from pemt.media import EmptyMediaError

        raise EmptyMediaError(
            "the file decodes to no windows; upload a clip with at least one frame or audio sample"
        )
    inputs = _pad_segments(batch_windows(windows), req.media.num_segments)
    infos = [
        WindowInfo(int(w.index), float(w.start), float(w.end), bool(w.has_audio), bool(w.has_video))
        for w in windows
    ]
    thumbs = [jpeg_bytes(getattr(w, "thumbnail", None)) for w in windows]
    return DecodeResult(inputs, infos, thumbs, seconds=time.perf_counter() - t0)


def _child(conn: Any, req: DecodeRequest) -> None:
    try:
        from pemt.media import MediaError

        try:
            res = decode_file(req)
            conn.send(("ok", res))
        except MediaError as e:
            conn.send(("media", str(getattr(e, "code", "corrupt")), str(e)))
        except Exception as e:  # noqa: BLE001 - a decoder failure on this input: report it as such
            conn.send(
                ("media", "corrupt", f"the file could not be decoded ({type(e).__name__}: {e})")
            )
    finally:
        conn.close()


class DecodePool:
    """Bounded decoding in child processes, each with a time limit."""

    def __init__(self, slots: int, timeout_s: float, grace_s: float = 2.0) -> None:
        self.slots = slots
        self.timeout_s = timeout_s
        self.grace_s = grace_s  # pemt.media stops itself at timeout_s; the kill comes after this
        self._sem = asyncio.Semaphore(slots)
        try:
            self._ctx: Any = mp.get_context("forkserver")
            self._ctx.set_forkserver_preload(_PRELOAD)
        except ValueError:  # no forkserver on this platform
            self._ctx = mp.get_context("spawn")
        self._procs: set[Any] = set()

    def warm(self) -> None:
        """Start the forkserver now (imports happen once, not on the first upload)."""
        self._run(None, timeout_s=60.0)

    def _run(
        self, req: DecodeRequest | None, timeout_s: float | None = None
    ) -> DecodeResult | None:
        limit = self.timeout_s + self.grace_s if timeout_s is None else timeout_s
        parent, child = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child if req is not None else _noop,
            args=(child, req),
            daemon=True,
            name="pemt-decode",
        )
        proc.start()
        self._procs.add(proc)
        child.close()
        try:
            if not parent.poll(limit):
                proc.kill()
                raise MediaRejected(
                    "timeout",
                    f"decoding took longer than {self.timeout_s:.0f} s and was stopped; "
                    "upload a shorter or lower-resolution clip",
                )
            try:
                msg = parent.recv()
            except EOFError:
                proc.join(1.0)
                raise MediaRejected(
                    "corrupt",
                    f"the decoder crashed on this file (exit code {proc.exitcode}); "
                    "the file is damaged or not a supported video",
                ) from None
        finally:
            parent.close()
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
            self._procs.discard(proc)
        if req is None:
            return None
        if msg[0] == "ok":
            return msg[1]
        # the temp file's name means nothing to the client
        base = os.path.basename(req.path)
        text = str(msg[2]).replace(f"'{base}'", "the upload").replace(base, "the upload")
        raise MediaRejected(msg[1], text)

    async def decode(self, req: DecodeRequest) -> DecodeResult:
        if not os.path.isfile(req.path):
            raise InvalidRequest("the upload is missing on the server; send it again")
        async with self._sem:
            res = await asyncio.to_thread(self._run, req)
        assert res is not None
        return res

    def close(self) -> None:
        for p in list(self._procs):
            if p.is_alive():
                p.kill()


def _noop(conn: Any, _req: Any) -> None:
    conn.send(("ok", None))
    conn.close()
