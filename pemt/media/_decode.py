"""Decode any file FFmpeg reads (PyAV) into segments of ``frames_per_segment`` frames, streaming.

Video frames are chosen by timestamp (sample and hold: the latest frame at or before each
target time), so variable-frame-rate input gives constant-rate output. Each chosen frame is
resized by swscale (short side to ``image_size``), rotated as its display matrix says, and
centre-cropped. Audio is resampled to mono at ``sample_rate`` (swresample downmixes 5.1).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Protocol

import av
import av.error
import numpy as np

from pemt.config import MediaConfig
from pemt.media._audio import segment_log_mel
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
from pemt.media._geometry import SlotClock, crop_offset, display_size, scaled_size

__all__ = ["DecodeLimits", "MediaInfo", "Source", "probe"]

Source = str | os.PathLike[str] | IO[bytes] | bytes | bytearray

THUMBNAIL_SIZE = 160  # short side of Window.thumbnail
_EPS = 1e-3  # seconds: a frame this close after a target time still counts as "at" it
# a modality this many segments behind the other is taken as ended (bounds memory on files
# whose audio stops early, or whose streams are badly interleaved)
_MAX_VIDEO_LAG = 12  # buffered video segments waiting for audio
_MAX_AUDIO_LAG = 600  # buffered audio segments waiting for video (they are small)
# demuxers that are not audio/video or that open other files or URLs on their own
_REFUSED_FORMATS = {"tty", "hls", "concat", "ffmetadata", "image2", "lavfi", "data", "bin"}
# image containers: a picture (even an animated one, which has no sound) is not a video; the
# *_pipe demuxers (PNG, JPEG, WebP, ...) are images too
_IMAGE_FORMATS = {
    "gif": "a GIF image",
    "apng": "an animated PNG image",
    "ico": "an icon image",
    "alias_pix": "an Alias PIX image",
    "brender_pix": "a BRender PIX image",
    "fits": "a FITS image",
    "jpegxl_anim": "a JPEG XL image",
}
_MAGIC = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP / M4A
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI / WAV
    (0, b"OggS"),
    (0, b"fLaC"),
    (0, b"ID3"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x00\x00\x01\xb3"),  # MPEG-1/2 video
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
    (0, b"\x47"),  # MPEG-TS sync byte
)


# what PyAV and FFmpeg raise on bad data (our own bugs, TypeError and the like, stay raw)
_DECODE_ERRORS = (
    av.error.FFmpegError,
    ValueError,
    RuntimeError,
    OSError,
    EOFError,
    IndexError,
    OverflowError,
    UnicodeError,
)
# containers whose declared duration is exact: decoding much less than it means truncation
_EXACT_DURATION = ("mov", "matroska", "avi")


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds checked before and while decoding; over a bound raises LimitError,
    DecodeTimeoutError or (``max_gap_s``) CorruptMediaError.

    ``max_gap_s``: the longest one video frame may stand in for missing ones (sample and hold).
    A timestamp jump longer than this between frames (or before the first frame) is damage,
    not a still picture, so it raises CorruptMediaError: a few tiny frames far apart must not
    turn into an hour of held frames. A last frame that claims a longer duration is held this
    long; the video ends there (later segments are masked)."""

    max_bytes: int = 4 * 1024**3  # 4 GiB
    max_duration_s: float = 3 * 3600.0  # 3 h
    max_pixels: int = 7680 * 4320  # 8K
    time_budget_s: float = 300.0  # wall-clock seconds of decoding
    max_gap_s: float = 5.0  # seconds one video frame may be held

    def __post_init__(self) -> None:
        bounds = (self.max_bytes, self.max_duration_s, self.max_pixels, self.time_budget_s)
        if min(*bounds, self.max_gap_s) <= 0:
            raise ValueError(f"DecodeLimits fields must be positive, got {self}")


@dataclass
class MediaInfo:
    """What :func:`probe` finds. Width and height are the display size (after rotation)."""

    duration: float | None  # seconds; None when the container does not say (raw MPEG streams)
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_codec: str | None = None
    audio_codec: str | None = None
    rotation: int = 0  # degrees counter-clockwise, as PyAV's VideoFrame.rotation
    sample_rate: int = 0
    channels: int = 0
    container: str = ""
    size_bytes: int | None = None


# --- opening --------------------------------------------------------------------------------


class _Budget:
    """Wall-clock decode time, not counting time the caller spends between windows."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.spent = 0.0
        self.started = time.monotonic()

    def pause(self) -> None:
        self.spent += time.monotonic() - self.started

    def resume(self) -> None:
        self.started = time.monotonic()

    def check(self) -> None:
        if self.spent + time.monotonic() - self.started > self.limit_s:
            raise DecodeTimeoutError(
                f"decoding took longer than the time budget of {self.limit_s:g} s; "
                "send a shorter or lower-resolution file, or raise DecodeLimits.time_budget_s"
            )


class _Opened:
    """An open container with its chosen streams; closes the file it opened."""

    def __init__(self, source: Source, limits: DecodeLimits) -> None:
        self.limits = limits
        self.budget = _Budget(limits.time_budget_s)
        self._owned: IO[bytes] | None = None
        self._closed = False
        self.stream_hint = ""
        self._restore: tuple[IO[bytes], int] | None = None
        fileobj: IO[bytes] | _Prepended
        fileobj, self.size, self.name = self._file(source)
        head = fileobj.read(64)
        if self._seekable(fileobj):
            fileobj.seek(-len(head), io.SEEK_CUR)
        else:  # a pipe or socket: hand FFmpeg the bytes we peeked at, then the rest
            fileobj = _Prepended(head, fileobj)
            self.stream_hint = (
                " (it was read as a stream without seeking: an MP4/MOV whose index is at the "
                "end needs a seekable file object)"
            )
        if self.size == 0 or not head:
            self.close()
            raise EmptyMediaError(f"{self.name} is empty (0 bytes); send a non-empty media file")
        if self.size is not None and self.size > limits.max_bytes:
            self.close()
            raise LimitError(
                f"{self.name} is {self.size / 2**20:.1f} MiB, over the limit of "
                f"{limits.max_bytes / 2**20:.0f} MiB; send a smaller file",
                code="too_large",
            )
        try:
            self.container = av.open(
                fileobj, "r", metadata_errors="replace", options={"protocol_whitelist": "file"}
            )
        except Exception as e:
            self.close()
            if _looks_like_media(head):
                raise CorruptMediaError(
                    f"{self.name} looks like a media file but cannot be opened ({_reason(e)}); "
                    "it may be truncated or damaged: re-export or re-upload it"
                ) from None
            raise NotMediaError(
                f"{self.name} is not a media file FFmpeg can read ({_reason(e)}); "
                "send a video or audio file (MP4, WebM, MKV, MOV, AVI, MP3, WAV, ...)"
            ) from None
        try:
            self._select()
        except MediaError:
            self.close()
            raise
        except _DECODE_ERRORS as e:
            self.close()
            raise CorruptMediaError(
                f"{self.name} ({self.container.format.name}) cannot be read ({_reason(e)}); "
                "the file may be damaged: re-export or re-upload it"
            ) from None

    def _file(self, source: Source) -> tuple[IO[bytes], int | None, str]:
        if isinstance(source, bytes | bytearray):
            return io.BytesIO(bytes(source)), len(source), "the data"
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"no such media file: {path}")
            self._owned = open(path, "rb")  # noqa: SIM115 (closed by close())
            return self._owned, path.stat().st_size, f"'{path.name}'"
        if not hasattr(source, "read"):
            raise TypeError(
                f"source must be a path, bytes or a binary file object, got {type(source)}"
            )
        name = f"'{Path(str(getattr(source, 'name', 'upload'))).name}'"
        size = None
        if self._seekable(source):
            pos = source.tell()
            self._restore = (source, pos)
            size = source.seek(0, io.SEEK_END) - pos
            source.seek(pos)
        return source, size, name

    @staticmethod
    def _seekable(f: IO[bytes]) -> bool:
        try:
            return bool(f.seekable())
        except (AttributeError, OSError, ValueError):
            return False

    def _select(self) -> None:
        c = self.container
        self.format = c.format.name
        name = self.format.split(",")[0]
        if name in _REFUSED_FORMATS or name in _IMAGE_FORMATS or self.format.endswith("_pipe"):
            kind = _IMAGE_FORMATS.get(name) or (
                "a still image" if self.format.endswith("_pipe") else f"'{self.format}' data"
            )
            raise NotMediaError(
                f"{self.name} is {kind}, not audio or video; send a video or audio file "
                "(convert images and GIFs to MP4 or WebM first)"
            )
        self.video = next(
            (
                s
                for s in c.streams.video
                if not s.disposition & av.stream.Disposition.attached_pic
                and not s.disposition & av.stream.Disposition.still_image
                and s.codec_context is not None
            ),
            None,
        )
        self.audio = next((s for s in c.streams.audio if s.codec_context is not None), None)
        if self.video is None and self.audio is None:
            kinds: list[str] = sorted({str(s.type) for s in c.streams}) or ["none"]
            raise NoStreamError(
                f"{self.name} ({self.format}) has no audio or video stream that can be decoded "
                f"(streams: {', '.join(kinds)}); send a file with a video or audio track"
            )
        if self.video is not None:
            self.video.thread_type = "AUTO"
        # timestamps are measured from the earliest stream start (MPEG streams start at ~0.5 s)
        self.t0 = c.start_time / av.time_base if c.start_time is not None else None
        self.duration = self._duration()
        self._check_limits()

    def _duration(self) -> float | None:
        c = self.container
        if c.duration is not None and c.duration > 0:
            return c.duration / av.time_base
        durs = [
            float(s.duration * s.time_base)
            for s in (self.video, self.audio)
            if s is not None and s.duration and s.time_base
        ]
        return max(durs) if durs else None

    def _check_limits(self) -> None:
        lim = self.limits
        if self.duration is not None and self.duration > lim.max_duration_s:
            raise LimitError(
                f"{self.name} lasts {self.duration:.0f} s, over the limit of "
                f"{lim.max_duration_s:.0f} s; cut it into shorter parts",
                code="too_long",
            )
        if self.video is not None:
            cc = self.video.codec_context
            self.check_pixels(cc.width, cc.height)

    def check_pixels(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise LimitError(
                f"{self.name} is {width}x{height}, over the limit of "
                f"{self.limits.max_pixels} pixels per frame; downscale it (e.g. to 1080p)",
                code="resolution",
            )

    def close(self) -> None:
        c = getattr(self, "container", None)
        if c is not None and not self._closed:
            with contextlib.suppress(Exception):
                c.close()
        self._closed = True
        if self._owned is not None:
            self._owned.close()
            self._owned = None
        if self._restore is not None:
            f, pos = self._restore
            with contextlib.suppress(Exception):
                f.seek(pos)
            self._restore = None

    def info(self, rotation: int = 0) -> MediaInfo:
        v, a = self.video, self.audio
        info = MediaInfo(
            duration=self.duration,
            has_video=v is not None,
            has_audio=a is not None,
            container=self.format,
            size_bytes=self.size,
            rotation=rotation,
        )
        if v is not None:
            cc = v.codec_context
            w, h = display_size(cc.width, cc.height, v.sample_aspect_ratio, rotation)
            info.width, info.height = w, h
            rate = v.average_rate or v.guessed_rate or v.base_rate
            info.fps = float(rate) if rate else 0.0
            info.video_codec = cc.name
        if a is not None:
            acc = a.codec_context
            info.audio_codec = acc.name
            info.sample_rate = acc.sample_rate or 0
            info.channels = acc.channels or 0
        return info


class _Prepended:
    """A read-only stream: ``head`` and then the rest of ``f`` (no ``seek``, so FFmpeg
    streams it)."""

    def __init__(self, head: bytes, f: IO[bytes]) -> None:
        self.head, self.f = head, f

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.f.read(n)
        if n < 0:
            out, self.head = self.head + self.f.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        return out


def _reason(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(msg).split(": '")[0]


def _looks_like_media(head: bytes) -> bool:
    return any(head[off : off + len(magic)] == magic for off, magic in _MAGIC)


def probe(source: Source, limits: DecodeLimits | None = None) -> MediaInfo:
    """Open ``source`` and check it against ``limits`` without decoding it all.

    Decodes the first video frame to read its rotation. Raises a :class:`MediaError`
    subclass for anything that is not decodable media or is over a limit. A file object is
    left at the position it had.
    """
    opened = _Opened(source, limits or DecodeLimits())
    try:
        rotation = 0
        if opened.video is not None:
            try:
                for packet in opened.container.demux(opened.video):
                    opened.budget.check()
                    frames = packet.decode()
                    if frames:
                        rotation = _rotation(frames[0])
                        break
            except _DECODE_ERRORS as e:
                raise CorruptMediaError(
                    f"{opened.name}: the video stream cannot be decoded ({_reason(e)}); "
                    "the file may be damaged: re-export or re-upload it"
                ) from None
        return opened.info(rotation)
    finally:
        opened.close()


def _rotation(frame: av.VideoFrame) -> int:
    try:
        rot = frame.rotation
    except Exception:
        return 0
    if not rot:
        return 0
    rot = int(round(rot / 90.0)) * 90 % 360  # 0, 90, 180, 270
    return rot - 360 if rot > 180 else rot  # (-180, 180], as PyAV reports it


# --- frame conversion -----------------------------------------------------------------------


class _Converter:
    """uint8 RGB (size, size, 3) crops and thumbnails from PyAV frames via swscale.

    The frame converter of the PyAV backend; the NVDEC backend has one with the same three
    methods (``crop``, ``stack``, ``thumbnail``) and the same geometry
    (:func:`pemt.media._geometry.scaled_size`, :func:`~pemt.media._geometry.crop_offset`)."""

    def __init__(self, size: int, sar: Fraction | None) -> None:
        self.size = size
        self.sar = sar
        self._plans: dict[tuple[int, int, int, int], tuple[int, int, int]] = {}

    def _plan(self, frame: av.VideoFrame, short: int, cap: int) -> tuple[int, int, int]:
        rot = _rotation(frame)
        key = (frame.width, frame.height, rot, short)
        plan = self._plans.get(key)
        if plan is None:
            w, h = scaled_size(frame.width, frame.height, self.sar, rot, short, cap)
            plan = self._plans[key] = (w, h, rot)
        return plan

    def _rgb(self, frame: av.VideoFrame, short: int, cap: int) -> np.ndarray:
        w, h, rot = self._plan(frame, short, cap)
        # AREA: a box filter, right for large downscales (720p -> 128 px), and fast
        img: np.ndarray = frame.reformat(
            width=w, height=h, format="rgb24", interpolation="AREA"
        ).to_ndarray()  # (h, w, 3)
        if rot:
            img = np.rot90(img, (rot // 90) % 4)  # counter-clockwise, as the display matrix says
        return img

    def crop(self, frame: av.VideoFrame) -> np.ndarray:
        s = self.size
        img = self._rgb(frame, s, 1 << 30)
        y, x = crop_offset(img.shape[0], s), crop_offset(img.shape[1], s)
        return np.ascontiguousarray(img[y : y + s, x : x + s])  # (S, S, 3)

    def stack(self, crops: list[np.ndarray]) -> np.ndarray:
        return np.stack(crops)  # (F, S, S, 3)

    def thumbnail(self, frame: av.VideoFrame) -> np.ndarray:
        return np.ascontiguousarray(self._rgb(frame, THUMBNAIL_SIZE, 4 * THUMBNAIL_SIZE))

    def new_frames(self, shape: tuple[int, ...]) -> np.ndarray:
        """Zeros for a window's frames (padding stays zero)."""
        return np.zeros(shape, np.uint8)


# --- samplers: decoded frames -> complete segments ------------------------------------------


@dataclass
class Segment:
    """One segment: video (F, S, S, 3) uint8, audio log-mel (n_mels, A) float32, or None
    where that modality has no data. ``thumb`` is the segment's middle frame, small."""

    video: np.ndarray | None
    audio: np.ndarray | None
    thumb: np.ndarray | None


class FrameConverter(Protocol):
    """What a decoder backend supplies to turn its decoded frames into segment tensors:
    ``crop`` one frame for one slot (may be lazy), ``stack`` a segment's crops into
    (F, S, S, 3) uint8, ``thumbnail`` a frame as a small numpy RGB picture, ``new_frames``
    a zero buffer of a window's frames. numpy for PyAV; torch tensors (on the GPU) for NVDEC."""

    def crop(self, frame: Any) -> Any: ...
    def stack(self, crops: list[Any]) -> Any: ...
    def thumbnail(self, frame: Any) -> np.ndarray: ...
    def new_frames(self, shape: tuple[int, ...]) -> Any: ...


class _VideoSampler:
    """Frames by timestamp, segment after segment, on the slots of :class:`SlotClock`; the
    frames may come from any backend (``conv`` converts them). A frame is converted once
    however many slots it fills."""

    def __init__(self, cfg: MediaConfig, conv: FrameConverter, source_fps: float | None) -> None:
        self.clock = SlotClock(cfg, source_fps)
        self.f = cfg.frames_per_segment
        self.seg = cfg.segment_seconds
        self.conv = conv
        self.i = 0  # next target slot (segment i // F, slot i % F)
        self.prev: Any = None
        self.prev_rgb: Any = None
        self.prev_end = 0.0
        self.cur: list[Any] = []
        self.thumb: np.ndarray | None = None
        self.done: deque[tuple[Any, np.ndarray | None]] = deque()
        self.count = 0  # segments produced
        self.ended = False
        self.end_time = 0.0

    def push(self, frame: Any, t: float, dur: float) -> None:
        if self.ended:
            return
        if self.prev is None:  # the first frame also stands for the targets before it
            self.prev, self.prev_rgb = frame, None
        while self.clock.target(self.i) < t - _EPS:
            self._take(self.prev)
        if self.prev is not frame:
            self.prev, self.prev_rgb = frame, None
        self.prev_end = max(self.prev_end, t + dur)

    def _take(self, frame: Any) -> None:
        if frame is not self.prev or self.prev_rgb is None:
            rgb = self.conv.crop(frame)
            if frame is self.prev:
                self.prev_rgb = rgb
        else:
            rgb = self.prev_rgb
        self.cur.append(rgb)
        self.i += 1
        if len(self.cur) == self.f // 2 + 1:
            self.thumb = self.conv.thumbnail(frame)
        if len(self.cur) == self.f:
            self._close_segment()

    def _close_segment(self) -> None:
        self.done.append((self.conv.stack(self.cur), self.thumb))  # (F, S, S, 3)
        self.cur, self.thumb = [], None
        self.count += 1

    def finish(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.end_time = self.prev_end
        if self.prev is None:
            return
        while self.clock.target(self.i) < self.prev_end - _EPS:
            self._take(self.prev)
        # a partial last segment counts when at least half of it is real (or it is all we have)
        covered = self.prev_end - self.count * self.seg
        if self.cur and (2 * covered >= self.seg - _EPS or self.count == 0):
            if self.thumb is None:
                self.thumb = self.conv.thumbnail(self.prev)
            while len(self.cur) < self.f:
                self.cur.append(self.cur[-1])
            self._close_segment()
        self.cur = []
        self.prev = self.prev_rgb = None


class _AudioSampler:
    def __init__(self, cfg: MediaConfig) -> None:
        self.cfg = cfg
        self.sr = cfg.sample_rate
        self.n = cfg.audio_samples_per_segment
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sr)
        self.pending: list[np.ndarray] = []
        self.pending_len = 0
        self.total = 0  # samples accepted so far (incl. leading silence)
        self.started = False
        self.skip = 0
        self.done: deque[np.ndarray] = deque()
        self.count = 0
        self.ended = False
        self.end_time = 0.0

    def push(self, frame: av.AudioFrame, t: float | None) -> None:
        if self.ended:
            return
        if not self.started:
            self.started = True
            offset = round((t or 0.0) * self.sr)
            if offset > 0:  # audio starts after the video: keep them in sync with silence
                self._add(np.zeros(offset, np.float32))
            else:
                self.skip = -offset
        try:
            out = self.resampler.resample(frame)
        except ValueError:  # the input format changed mid-stream: start a new resampler
            out = self.resampler.resample(None)
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sr)
            out += self.resampler.resample(frame)
        for f in out:
            self._add(f.to_ndarray().reshape(-1))

    def _add(self, x: np.ndarray) -> None:
        if self.skip:
            cut = min(self.skip, len(x))
            x, self.skip = x[cut:], self.skip - cut
        if not len(x):
            return
        self.pending.append(x)
        self.pending_len += len(x)
        self.total += len(x)
        if self.pending_len >= self.n:
            self._drain(final=False)

    def _drain(self, final: bool) -> None:
        buf = np.concatenate(self.pending) if self.pending else np.zeros(0, np.float32)
        k = len(buf) // self.n
        if (
            final
            and len(buf) % self.n
            and (2 * (len(buf) % self.n) >= self.n or self.count + k == 0)
        ):
            k += 1  # the last partial segment counts
        if k:
            # a partial last segment is transformed as it is (AVBERT's end of a video)
            mel = segment_log_mel(buf[: min(k * self.n, len(buf))], self.cfg)  # (k, n_mels, A)
            self.done.extend(mel)
            self.count += k
        rest = buf[k * self.n :] if not final else buf[:0]
        self.pending, self.pending_len = ([rest] if len(rest) else []), len(rest)

    def finish(self) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            for f in self.resampler.resample(None):
                self._add(f.to_ndarray().reshape(-1))
        except ValueError:
            pass
        self.end_time = self.total / self.sr
        self._drain(final=True)


# --- the segment stream ---------------------------------------------------------------------


class SegmentStream:
    """Open ``source`` eagerly (errors raise here), then iterate its :class:`Segment` s.

    This class decodes with PyAV; a backend subclass replaces ``_converter`` (how frames become
    segment tensors) and ``_events`` (decoded frames in time order), nothing else."""

    backend = "cpu"

    def __init__(
        self,
        source: Source,
        cfg: MediaConfig,
        limits: DecodeLimits | None = None,
        *,
        require_audio: bool = False,
        require_video: bool = False,
    ) -> None:
        self.cfg = cfg
        self.opened = _Opened(source, limits or DecodeLimits())
        o = self.opened
        missing = [
            (flag, code, what)
            for flag, present, code, what in (
                (require_video, o.video is not None, "missing_video", "a video"),
                (require_audio, o.audio is not None, "missing_audio", "an audio"),
            )
            if flag and not present
        ]
        if missing:
            o.close()
            _, code, what = missing[0]
            raise MissingModalityError(
                f"{o.name} has no {what.split()[1]} stream but {what} track is required; "
                f"send a file with {what} track",
                code=code,
            )
        self.name = o.name
        self.has_video_stream = o.video is not None
        self.has_audio_stream = o.audio is not None
        self._video_rate = None
        if o.video is not None:
            rate = o.video.average_rate or o.video.guessed_rate or o.video.base_rate
            self._video_rate = float(rate) if rate else None
        self.conv: FrameConverter = self._converter()
        self.video = (
            _VideoSampler(cfg, self.conv, self._video_rate) if o.video is not None else None
        )
        self.audio = _AudioSampler(cfg) if o.audio is not None else None
        o.budget.pause()  # counts again while iterating
        self.end_time = 0.0  # where the content ends, seconds; set when decoding is done
        self.finished = False

    @property
    def has_video(self) -> bool:
        return self.video is not None and self.video.count > 0

    @property
    def has_audio(self) -> bool:
        return self.audio is not None and self.audio.count > 0

    def close(self) -> None:
        self.opened.close()

    def __iter__(self) -> Iterator[Segment]:
        try:
            yield from self._segments()
        finally:
            self.close()

    # --- what a backend provides: a frame converter and the decoded frames in time order ----

    def _converter(self) -> FrameConverter:
        sar = self.opened.video.sample_aspect_ratio if self.opened.video is not None else None
        return _Converter(self.cfg.image_size, sar)

    def _events(self) -> Iterator[tuple[str, Any, float | None, float]]:
        """Decoded frames in demux order as ``(kind, frame, t, dur)``: kind ``"v"`` (``t``
        seconds from the content start, ``dur`` its duration) or ``"a"`` (``t`` or None).
        This PyAV version decodes both streams of the one container."""
        o, v = self.opened, self.video
        streams = [s for s in (o.video, o.audio) if s is not None]
        t0 = o.t0
        last_vt: float | None = None
        for packet in o.container.demux(*streams):
            o.budget.check()
            for frame in packet.decode():
                if not isinstance(frame, av.VideoFrame | av.AudioFrame):
                    continue
                t = frame.time
                if t0 is None:
                    t0 = t if t is not None else 0.0
                if isinstance(frame, av.AudioFrame):
                    yield "a", frame, None if t is None else t - t0, 0.0
                    continue
                assert v is not None
                o.check_pixels(frame.width, frame.height)
                step = 1.0 / self._video_rate if self._video_rate else v.seg / v.f
                if t is None:
                    t = (last_vt + step) if last_vt is not None else t0
                dur = step
                if frame.duration and frame.time_base:
                    dur = float(frame.duration * frame.time_base)
                last_vt = t
                yield "v", frame, t - t0, dur

    # --- shared by every backend: frames -> paired segments ---------------------------------

    def _segments(self) -> Iterator[Segment]:
        o, v, a = self.opened, self.video, self.audio
        max_t = self.opened.limits.max_duration_s
        max_gap = self.opened.limits.max_gap_s
        audio_started = False
        produced = 0
        o.budget.resume()
        try:
            last_v: float | None = None  # start of the previous video frame (content time)
            for kind, frame, t, dur in self._events():
                if kind == "v":
                    assert v is not None and t is not None
                    held_from = last_v if last_v is not None else 0.0
                    if t - held_from > max_gap:
                        self._gap("video", held_from, t)
                    last_v = t
                    if t > max_t:
                        self._too_long()
                    v.push(frame, t, min(dur, max_gap))
                else:
                    assert a is not None
                    if not audio_started and t is not None and t > max_gap:
                        self._gap("audio", 0.0, t)  # it would be padded with silence
                    audio_started = True
                    a.push(frame, t)
                    if a.total / a.sr > max_t:
                        self._too_long()
                # hand out the segments both modalities have finished
                self._bound_lag()
                while self._ready():
                    seg = self._pop()
                    produced += 1
                    o.budget.pause()
                    yield seg
                    o.budget.resume()
        except MediaError:
            raise
        except _DECODE_ERRORS as e:
            raise CorruptMediaError(
                f"{self.name} cannot be decoded ({_reason(e)}); the file is damaged or "
                "truncated: re-export or re-upload it" + o.stream_hint
            ) from None
        if v is not None:
            v.finish()
        if a is not None:
            a.finish()
        self.end_time = max(v.end_time if v else 0.0, a.end_time if a else 0.0)
        self.finished = True
        declared = o.duration if o.format.startswith(_EXACT_DURATION) else None
        if declared and self.end_time < 0.8 * declared - 0.5:
            raise CorruptMediaError(
                f"{self.name} is truncated or damaged: only {self.end_time:.1f} s of its "
                f"{declared:.1f} s could be decoded; re-upload or re-export it"
            )
        while (v is not None and v.done) or (a is not None and a.done):
            seg = self._pop()
            produced += 1
            o.budget.pause()
            yield seg
            o.budget.resume()
        if produced == 0:
            raise EmptyMediaError(
                f"{self.name} has streams but no decodable frames or samples (zero duration); "
                "send a file with content"
            )

    def _too_long(self) -> None:
        lim = self.opened.limits.max_duration_s
        raise LimitError(
            f"{self.name} lasts longer than the limit of {lim:.0f} s; cut it into shorter parts",
            code="too_long",
        )

    def _gap(self, stream: str, since: float, t: float) -> None:
        raise CorruptMediaError(
            f"{self.name}: the {stream} timestamps jump from {since:.1f} s to {t:.1f} s, a gap "
            f"longer than {self.opened.limits.max_gap_s:g} s (it would be filled with a held "
            "frame or silence); the file is damaged: re-export it (or raise "
            "DecodeLimits.max_gap_s)"
        )

    def _bound_lag(self) -> None:
        v, a = self.video, self.audio
        if v is None or a is None:
            return
        if len(v.done) > _MAX_VIDEO_LAG and not a.done and not a.ended:
            a.finish()
        if len(a.done) > _MAX_AUDIO_LAG and not v.done and not v.ended:
            v.finish()

    def _ready(self) -> bool:
        v, a = self.video, self.audio
        return all(m is None or bool(m.done) or m.ended for m in (v, a)) and any(
            m is not None and bool(m.done) for m in (v, a)
        )

    def _pop(self) -> Segment:
        video = thumb = audio = None
        if self.video is not None and self.video.done:
            video, thumb = self.video.done.popleft()
        if self.audio is not None and self.audio.done:
            audio = self.audio.done.popleft()
        return Segment(video, audio, thumb)
