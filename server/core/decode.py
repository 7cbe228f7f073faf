"""Decoding off the event loop, one short-lived process per upload, streaming windows back.

A decoder that hangs or crashes on a hostile file takes down only its own process: the parent
kills it once it has waited ``timeout_s`` (+ grace) for it. Processes come from a forkserver
that has already imported numpy, PyAV and pemt.media, so a job starts in milliseconds.
``slots`` bounds how many decode at once.

Memory contract: the child sends one window at a time over a pipe (a small pickled header,
then each model input as raw bytes) and blocks while the pipe is full; the parent reads
``batch_size`` windows into one batch, hands it to the caller (who embeds it) and reads the
next batch only when the caller asks. So a request holds at most one batch in the parent and
one window (plus the T segments it is cut from) in the child, whatever the file: memory is
bounded by settings (batch size, window shape), not by the upload. ``max_windows`` bounds the
work: a file known to give more is refused before decoding (its declared duration), one that
turns out to is stopped at the first window over the limit (code ``too_many_windows``).

Child -> parent messages, in order: ``("info", duration_s | None)`` (the container's declared
duration), then ``("window", WindowInfo, jpeg | None)`` followed by one ``send_bytes`` per
model input (``pemt.spec`` order, the window's own segment count), repeated; then ``("done",)``
or ``("error", code, message)``. ``skip_windows`` (resuming a job) drops the first windows in
the child, before they are converted or sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import multiprocessing as mp
import os
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np

from pemt.config import MediaConfig
from pemt.spec import TensorSpec, window_inputs
from server.core.errors import InvalidRequest, MediaRejected

__all__ = [
    "DecodePool",
    "DecodeRequest",
    "DecodeResult",
    "WindowBatch",
    "WindowInfo",
    "decode_file",
    "iter_decoded",
    "jpeg_bytes",
    "least_windows",
]

_PRELOAD = ["numpy", "av", "pemt.media", "server.core.decode"]
T = TypeVar("T")

# pemt.media names its own knobs in messages; a service client can only change these settings
_SETTING_NAMES = {
    "DecodeLimits.max_gap_s": "PEMT_MAX_GAP_S",
    "DecodeLimits.time_budget_s": "PEMT_DECODE_TIMEOUT_S",
}


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
    max_gap_s: float | None = None
    require_audio: bool = False
    require_video: bool = False
    decoder: str = "cpu"  # "cpu" | "nvdec", resolved once at start-up (pemt.media)
    max_windows: int | None = None  # more windows than this: too_many_windows (413)
    skip_windows: int = 0  # decode but do not send windows with a lower index (a resumed job)


@dataclass(frozen=True)
class WindowInfo:
    index: int
    start: float
    end: float
    has_audio: bool
    has_video: bool


@dataclass
class WindowBatch:
    """Up to ``batch_size`` consecutive windows: model inputs padded to the model's T."""

    inputs: dict[str, np.ndarray]  # pemt.spec.model_inputs, batch = len(windows)
    windows: list[WindowInfo]
    thumbnails: list[bytes | None]
    duration_s: float | None = None  # the file's declared duration (None: not declared)


@dataclass
class DecodeResult:
    """Every window of a file at once (:func:`decode_file`; tests and benchmarks)."""

    inputs: dict[str, np.ndarray]  # pemt.spec.model_inputs, batch = windows
    windows: list[WindowInfo]
    thumbnails: list[bytes | None]
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class WindowLimitError(Exception):
    """The upload gives more windows than ``DecodeRequest.max_windows``."""

    code = "too_many_windows"


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


def least_windows(duration_s: float, segment_s: float, window: int, stride: int) -> int:
    """How many windows a clip of ``duration_s`` gives at least (pemt.media's layout: one
    window every ``stride`` segments while ``window`` segments fit, plus one ending where the
    clip ends). Counts whole segments only, so it never overestimates."""
    n = math.floor(duration_s / segment_s + 1e-9)
    return 1 if n <= window else math.ceil((n - window) / stride) + 1


def _window_media(req: DecodeRequest) -> MediaConfig:
    if req.window_segments is not None and req.window_segments != req.media.num_segments:
        return dataclasses.replace(req.media, num_segments=req.window_segments)
    return req.media


def iter_decoded(
    req: DecodeRequest,
    on_duration: Callable[[float | None], None] | None = None,
) -> Iterator[tuple[WindowInfo, dict[str, np.ndarray], bytes | None]]:
    """Decode ``req.path`` in this process, one window at a time: its info, its model inputs
    (``window_segments`` segments, not padded) and its JPEG thumbnail; windows below
    ``skip_windows`` are decoded but not yielded. ``on_duration`` is called once, before the
    first window, with the declared duration. Raises MediaError for bad media,
    WindowLimitError past ``max_windows``."""
    from pemt.media import DecodeLimits, EmptyMediaError, iter_windows, probe

    media = _window_media(req)
    given: dict[str, Any] = {
        "max_bytes": req.max_bytes,
        "max_duration_s": req.max_duration_s,
        "max_pixels": req.max_pixels,
        "time_budget_s": req.time_budget_s,
        "max_gap_s": req.max_gap_s,
    }
    limits = DecodeLimits(**{k: v for k, v in given.items() if v is not None})
    seg = media.segment_seconds
    stride = (
        round(req.stride_s / seg) if req.stride_s is not None else max(1, media.num_segments // 2)
    )
    duration = None
    if req.max_windows is not None or on_duration is not None:
        duration = probe(req.path, limits).duration  # opens and checks; decodes one frame
        if on_duration is not None:
            on_duration(duration)
        if duration is not None and req.max_windows is not None:
            least = least_windows(duration, seg, media.num_segments, stride)
            if least > req.max_windows:
                raise WindowLimitError(
                    f"the upload lasts {duration:.0f} s, which gives {least} windows of "
                    f"{media.window_seconds:g} s every {stride * seg:g} s, over the limit of "
                    f"{req.max_windows} windows per request (PEMT_MAX_WINDOWS_PER_REQUEST); "
                    "send a larger stride or a shorter clip"
                )
    names = [s.name for s in window_inputs(media)]
    count = 0
    for w in iter_windows(
        req.path,
        media,
        stride_s=req.stride_s,
        limits=limits,
        require_audio=req.require_audio,
        require_video=req.require_video,
        decoder=req.decoder,
    ):
        if req.max_windows is not None and count >= req.max_windows:
            raise WindowLimitError(
                f"the upload gives more than {req.max_windows} windows (one every "
                f"{stride * seg:g} s), the limit per request (PEMT_MAX_WINDOWS_PER_REQUEST); "
                "send a larger stride or a shorter clip"
            )
        if w.index < req.skip_windows:  # committed before a restart
            count += 1
            continue
        info = WindowInfo(
            int(w.index), float(w.start), float(w.end), bool(w.has_audio), bool(w.has_video)
        )
        arrays = {name: np.ascontiguousarray(getattr(w, name)) for name in names}
        yield info, arrays, jpeg_bytes(getattr(w, "thumbnail", None))
        count += 1
    if count == 0:
        raise EmptyMediaError(
            "the file decodes to no windows; upload a clip with at least one frame or audio sample"
        )


def _input_specs(req: DecodeRequest) -> list[tuple[TensorSpec, tuple[int, ...]]]:
    """Each model input's spec (the model's T) with the shape one window arrives in."""
    specs = window_inputs(req.media)
    sent = {s.name: s.shape for s in window_inputs(_window_media(req))}
    return [(s, sent[s.name]) for s in specs]


def _batch(specs: list[tuple[TensorSpec, tuple[int, ...]]], n: int) -> dict[str, np.ndarray]:
    return {s.name: np.zeros((n, *s.shape), s.np_dtype) for s, _ in specs}  # padding: 0 / False


def decode_file(req: DecodeRequest) -> DecodeResult:
    """Decode every window in this process and stack them (tests and benchmarks; the service
    streams through :class:`DecodePool`)."""
    t0 = time.perf_counter()
    specs = _input_specs(req)
    rows = list(iter_decoded(req))
    inputs = _batch(specs, len(rows))
    for i, (_, arrays, _) in enumerate(rows):
        for s, shape in specs:
            inputs[s.name][i, : shape[0]] = arrays[s.name]
    return DecodeResult(
        inputs,
        [info for info, _, _ in rows],
        [thumb for _, _, thumb in rows],
        seconds=time.perf_counter() - t0,
    )


def _public_message(e: BaseException) -> str:
    text = str(e)
    for ours, setting in _SETTING_NAMES.items():
        text = text.replace(ours, setting)
    return text


def _child(conn: Any, req: DecodeRequest) -> None:
    try:
        from pemt.media import MediaError

        try:

            def info(duration: float | None) -> None:
                conn.send(("info", duration))

            for window, arrays, thumb in iter_decoded(req, info):
                conn.send(("window", window, thumb))  # blocks while the parent is busy
                for array in arrays.values():
                    conn.send_bytes(array.reshape(-1).view(np.uint8))
            conn.send(("done",))
        except (MediaError, WindowLimitError) as e:
            conn.send(("error", str(getattr(e, "code", "corrupt")), _public_message(e)))
        except OSError:
            raise  # the parent stopped reading (cancelled, or it killed this job)
        except Exception as e:  # noqa: BLE001 - a decoder failure on this input: report it as such
            conn.send(
                ("error", "corrupt", f"the file could not be decoded ({type(e).__name__}: {e})")
            )
    except OSError:
        pass
    finally:
        conn.close()


def _noop(conn: Any, _req: Any) -> None:
    conn.send(("done",))
    conn.close()


class _Job:
    """One child decoding one upload, and the parent's end of its pipe. Blocking methods:
    call them from a worker thread."""

    def __init__(self, ctx: Any, req: DecodeRequest | None, limit_s: float, shown_s: float) -> None:
        self.req = req
        self.limit_s = limit_s  # seconds the parent waits for the child in total
        self.shown_s = shown_s
        self.waited = 0.0  # not counting the time the caller spends between batches
        self.finished = False
        self.duration_s: float | None = None
        self.specs = _input_specs(req) if req is not None else []
        self.conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_child if req is not None else _noop,
            args=(child, req),
            daemon=True,
            name="pemt-decode",
        )
        self.proc.start()
        child.close()

    def _wait(self, read: Callable[[], T]) -> T:
        t0 = time.monotonic()
        try:
            if not self.conn.poll(max(0.0, self.limit_s - self.waited)):
                self.kill()
                raise MediaRejected(
                    "timeout",
                    f"decoding took longer than {self.shown_s:.0f} s and was stopped; "
                    "upload a shorter or lower-resolution clip",
                )
            try:
                return read()
            except EOFError:
                self.proc.join(1.0)
                raise MediaRejected(
                    "corrupt",
                    f"the decoder crashed on this file (exit code {self.proc.exitcode}); "
                    "the file is damaged or not a supported video",
                ) from None
        finally:
            self.waited += time.monotonic() - t0

    def _message(self) -> tuple[Any, ...]:
        msg = self._wait(self.conn.recv)
        if msg[0] == "error":
            self.finished = True
            assert self.req is not None
            # the temp file's name means nothing to the client
            base = os.path.basename(self.req.path)
            text = str(msg[2]).replace(f"'{base}'", "the upload").replace(base, "the upload")
            raise MediaRejected(str(msg[1]), text)
        if msg[0] == "done":
            self.finished = True
        return tuple(msg)

    def read_batch(self, n: int) -> WindowBatch | None:
        """The next up to ``n`` windows; None once the child has sent them all."""
        inputs = _batch(self.specs, n)
        windows: list[WindowInfo] = []
        thumbs: list[bytes | None] = []
        while len(windows) < n and not self.finished:
            msg = self._message()
            if msg[0] == "info":
                self.duration_s = msg[1]
                continue
            if msg[0] != "window":
                break
            i = len(windows)
            for spec, shape in self.specs:
                size = math.prod(shape) * spec.np_dtype.itemsize
                data = self._wait(functools.partial(self.conn.recv_bytes, size))
                if len(data) != size:
                    raise RuntimeError(
                        f"decoder sent {len(data)} bytes for {spec.name}, not {size}"
                    )
                inputs[spec.name][i, : shape[0]] = np.frombuffer(data, spec.np_dtype).reshape(shape)
            windows.append(msg[1])
            thumbs.append(msg[2])
        if not windows:
            return None
        return WindowBatch(
            {k: v[: len(windows)] for k, v in inputs.items()}, windows, thumbs, self.duration_s
        )

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()

    def close(self) -> None:
        """End the child (killing it if it still runs) and release the pipe."""
        if not self.finished:
            self.kill()
        self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(1.0)
        self.conn.close()


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
        self._jobs: set[_Job] = set()

    def warm(self) -> None:
        """Start the forkserver now (imports happen once, not on the first upload)."""
        job = _Job(self._ctx, None, 60.0, 60.0)
        try:
            job._wait(job.conn.recv)
        finally:
            job.finished = True
            job.close()

    async def stream(
        self, req: DecodeRequest, batch_size: int, *, timeout_s: float | None = None
    ) -> AsyncGenerator[WindowBatch, None]:
        """Decode ``req`` in a child, yielding batches of up to ``batch_size`` windows in order.
        ``timeout_s`` replaces the pool's time limit for this request (a background job's
        longer budget).

        The child decodes ahead by at most one window while a batch is out, so the caller's
        work on a batch (embedding it) paces the decoding. Raises MediaRejected (with
        pemt.media's code, ``timeout`` or ``too_many_windows``). Close the iterator (``async
        with contextlib.aclosing(...)``) to stop early: the child is killed."""
        if not os.path.isfile(req.path):
            raise InvalidRequest("the upload is missing on the server; send it again")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        async with self._sem:
            job = await self._start(req, self.timeout_s if timeout_s is None else timeout_s)
            self._jobs.add(job)
            try:
                while (batch := await self._read(job, batch_size)) is not None:
                    yield batch
            finally:
                self._jobs.discard(job)
                job.close()

    async def _start(self, req: DecodeRequest, timeout_s: float) -> _Job:
        """Start a child (a forkserver round trip, in a thread); a cancelled start ends it."""
        start = functools.partial(_Job, self._ctx, req, timeout_s + self.grace_s, timeout_s)
        fut = asyncio.get_running_loop().run_in_executor(None, start)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait([fut])
            if not fut.cancelled() and fut.exception() is None:
                fut.result().close()  # not finished: killed, then reaped
            raise

    @staticmethod
    async def _read(job: _Job, n: int) -> WindowBatch | None:
        fut = asyncio.get_running_loop().run_in_executor(None, job.read_batch, n)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            job.kill()  # the blocked read sees the pipe close and returns
            await asyncio.wait([fut])
            raise

    def close(self) -> None:
        for job in list(self._jobs):
            job.kill()
