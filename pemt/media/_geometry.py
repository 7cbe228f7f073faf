"""What every decoder backend must agree on, torch-free: which source frame fills each slot of a
segment, the size a frame is scaled to and where it is cropped, and how YUV becomes RGB.

The PyAV path (``pemt.media._decode``) and the NVDEC path (``pemt.media._nvdec``) both call
these, so the two produce the same segment tensors by construction: the same frames (by
timestamp), the same geometry, and colour conversion that differs only by rounding.

- :class:`SlotClock`: AVBERT's in-segment frame rule written in time.
- :func:`scaled_size` / :func:`crop_offset`: short side to ``size`` with the long side floored
  (as AVBERT resizes), centre crop at ``ceil((L - S) / 2)``.
- :class:`ColorSpec` / :func:`color_spec` / :func:`yuv_to_rgb`: the matrix and range swscale
  reads from a frame's tags (untagged = BT.601 limited range), and the chroma siting.
- :func:`area_weights`: swscale's ``SWS_AREA`` filter as a dense (out, in) matrix, so a GPU
  can scale with two matrix products.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from pemt.config import MediaConfig

__all__ = [
    "ColorSpec",
    "SlotClock",
    "area_weights",
    "chroma_weights",
    "color_spec",
    "crop_offset",
    "display_size",
    "scaled_size",
    "yuv_to_rgb",
]


# --- time: which frame fills which slot -----------------------------------------------------


class SlotClock:
    """Target times of the frame slots, segment after segment.

    Segment k covers ``[k D, (k + 1) D)`` (``D = segment_seconds``) and its ``F`` frames are
    spread evenly from its first source frame to its last one: AVBERT's rule on frame indices
    (``linspace(start, start + W - 1, F)`` with ``W = D * fps`` source frames), written in time
    so that variable frame rates need no indices. Slot ``i`` (segment ``i // F``, position
    ``i % F``) is at ``k D + j (D - 1 / fps) / (F - 1)`` and takes the latest source frame at or
    before that time (sample and hold).
    """

    def __init__(self, cfg: MediaConfig, source_fps: float | None) -> None:
        self.frames = cfg.frames_per_segment
        self.segment = cfg.segment_seconds
        frame = 1.0 / source_fps if source_fps and source_fps > 0 else self.segment / self.frames
        self.step = max(self.segment - frame, 0.0) / (self.frames - 1)

    def target(self, i: int) -> float:
        """Seconds from the start of the content at which slot ``i`` is sampled."""
        return (i // self.frames) * self.segment + (i % self.frames) * self.step


# --- space: scale and crop ------------------------------------------------------------------


def display_size(width: int, height: int, sar: Fraction | None, rotation: int) -> tuple[int, int]:
    """(width, height) as displayed: the sample aspect ratio applied, then the rotation."""
    if sar and sar > 0 and sar != 1:
        width = max(1, round(width * sar))
    return (height, width) if rotation % 180 else (width, height)


def scaled_size(
    width: int, height: int, sar: Fraction | None, rotation: int, short: int, cap: int
) -> tuple[int, int]:
    """(width, height) to scale the *stored* (unrotated) picture to, so that after rotation its
    short side is ``short`` and its long side ``floor(long * short / short_side)`` (AVBERT's
    resize), at most ``cap``."""
    dw, dh = display_size(width, height, sar, rotation)
    scale = short / min(dw, dh)
    tw = min(cap, max(short, int(dw * scale + 1e-9)))
    th = min(cap, max(short, int(dh * scale + 1e-9)))
    return (th, tw) if rotation % 180 else (tw, th)


def crop_offset(length: int, size: int) -> int:
    """Start of the centre crop of ``size`` in ``length``: ``ceil((length - size) / 2)``."""
    return -(-(length - size) // 2)


def area_weights(n_in: int, n_out: int, shift: float = 0.0) -> np.ndarray:
    """(n_out, n_in) float32 rows summing to 1: each output sample is the average of the input
    samples its box covers, edge samples weighted by the covered fraction (swscale's
    ``SWS_AREA``; for upscaling, linear interpolation between neighbours). ``shift`` moves the
    input sample positions, in input samples (chroma siting)."""
    r = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * r  # output sample centres, in input edge coordinates
    pos = np.arange(n_in) + 0.5 + shift
    dist = np.abs(pos[None, :] - centres[:, None])
    w = np.clip(max(r, 1.0) / 2 + 0.5 - dist, 0.0, 1.0)
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(np.float32)


def chroma_weights(n_in: int, n_out: int, shift: float, pairs: bool) -> np.ndarray:
    """(n_out, n_in) weights from a chroma plane to output pixels. ``pairs``: one chroma sample
    per two output pixels, as swscale's packed RGB output does for an even output width (an
    odd width makes it interpolate chroma for every pixel)."""
    if pairs and n_out % 2 == 0:
        return area_weights(n_in, n_out // 2, shift)[np.arange(n_out) // 2]
    return area_weights(n_in, n_out, shift)


# --- colour ---------------------------------------------------------------------------------

# (Kr, Kb) of each matrix swscale knows (libswscale/yuv2rgb.c, ff_yuv2rgb_coeffs)
_KR_KB = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
    "bt2020": (0.2627, 0.0593),
}
# AVColorSpace -> matrix; anything else (unspecified, RGB, ...) is what swscale defaults to
_AVCOL_SPC = {
    1: "bt709",
    4: "fcc",
    5: "bt601",
    6: "bt601",
    7: "smpte240m",
    9: "bt2020",
    10: "bt2020",
}
_AVCOL_RANGE_JPEG = 2


@dataclass(frozen=True)
class ColorSpec:
    """How a stream's YUV becomes RGB: ``matrix`` (a key of the Kr/Kb table), full or limited
    range, and whether chroma samples sit left (co-sited with even luma columns; H.264, HEVC,
    MPEG-2/4) or centred between them (MPEG-1, JPEG)."""

    matrix: str = "bt601"
    full_range: bool = False
    chroma_left: bool = True


def color_spec(
    colorspace: int | None, color_range: int | None, pix_fmt: str = "", codec: str = ""
) -> ColorSpec:
    """The conversion swscale applies to frames tagged ``colorspace`` / ``color_range``
    (FFmpeg's AVColorSpace / AVColorRange numbers): untagged is BT.601 limited range; the
    ``yuvj*`` formats are full range."""
    matrix = _AVCOL_SPC.get(int(colorspace or 2), "bt601")
    full = int(color_range or 0) == _AVCOL_RANGE_JPEG or pix_fmt.startswith("yuvj")
    return ColorSpec(matrix, full, chroma_left=codec not in ("mpeg1video", "mjpeg"))


def yuv_to_rgb(spec: ColorSpec) -> tuple[np.ndarray, np.ndarray]:
    """(M (3, 3), offsets (3,)) with ``rgb = M @ (yuv - offsets)`` in 0..255 levels."""
    kr, kb = _KR_KB[spec.matrix]
    kg = 1.0 - kr - kb
    ys, cs = (1.0, 1.0) if spec.full_range else (255.0 / 219.0, 255.0 / 224.0)
    m = np.array(
        [
            [ys, 0.0, 2.0 * (1.0 - kr) * cs],
            [ys, -2.0 * kb * (1.0 - kb) / kg * cs, -2.0 * kr * (1.0 - kr) / kg * cs],
            [ys, 2.0 * (1.0 - kb) * cs, 0.0],
        ],
        np.float32,
    )
    offsets = np.array([0.0 if spec.full_range else 16.0, 128.0, 128.0], np.float32)
    return m, offsets
