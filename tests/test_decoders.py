"""Decoder backends: selection (PEMT_DECODER), fallback, and the tensor contract of each.

The NVDEC backend is tested here without a GPU through its reference frame source
(``frames="pyav"``: the same frames decoded by PyAV into NV12), which runs everything of that
backend except the hardware decode: the pairing, the slot clock, the geometry and the torch
colour conversion. Tests marked ``gpu`` run the real NVDEC and skip cleanly without one.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from pemt.config import get_config
from pemt.media import (
    DecoderUnavailableError,
    MediaError,
    _select,
    batch_windows,
    iter_windows,
    load_windows,
    resolve_decoder,
)
from pemt.media._geometry import SlotClock, chroma_weights, crop_offset, scaled_size

torch = pytest.importorskip("torch")
from pemt.media._nvdec import NvdecSegmentStream, NvdecUnsupported  # noqa: E402
from pemt.media._windows import _windows  # noqa: E402

TINY = get_config("tiny").media
HAS_NVDEC = _select.nvdec_available()[0]
gpu = pytest.mark.skipif(not HAS_NVDEC, reason="needs NVDEC: an NVIDIA GPU and PyNvVideoCodec")


def _reference_windows(path, media=TINY, **kw):
    """The NVDEC backend's windows with PyAV as its frame source, on the CPU."""
    stream = NvdecSegmentStream(path, media, frames="pyav", device="cpu", **kw)
    return list(_windows(stream, media, max(1, media.num_segments // 2)))


# --- selection ------------------------------------------------------------------------------


def test_setting_is_checked(monkeypatch):
    with pytest.raises(ValueError, match=r"decoder='gpu' is not one of \['auto', 'cpu', 'nvdec'\]"):
        resolve_decoder("gpu")
    monkeypatch.setenv("PEMT_DECODER", "NVDEC ")
    assert _select.decoder_setting() == "nvdec"  # case and spaces forgiven
    monkeypatch.setenv("PEMT_DECODER", "fast")
    with pytest.raises(ValueError, match="PEMT_DECODER='fast'"):
        resolve_decoder()
    monkeypatch.setenv("PEMT_DECODER", "cpu")
    assert resolve_decoder() == "cpu"


@pytest.mark.skipif(HAS_NVDEC, reason="this machine has NVDEC")
def test_nvdec_requested_where_unavailable_says_what_to_do(sample_media):
    with pytest.raises(DecoderUnavailableError) as e:
        resolve_decoder("nvdec")
    msg = str(e.value)
    assert "PEMT_DECODER=nvdec" in msg and "pemt[gpu]" in msg and "PEMT_DECODER=auto" in msg
    assert _select.nvdec_available()[1] in msg  # the reason itself
    with pytest.raises(DecoderUnavailableError):
        load_windows(sample_media["clip"], TINY, decoder="nvdec")


@pytest.mark.skipif(HAS_NVDEC, reason="this machine has NVDEC")
def test_auto_falls_back_to_pyav_with_one_log_line(sample_media, caplog):
    _select._log_auto_fallback.cache_clear()
    with caplog.at_level(logging.INFO, logger="pemt.media"):
        windows = load_windows(sample_media["clip"], TINY, decoder="auto")
        load_windows(sample_media["clip"], TINY, decoder="auto")
    lines = [r.getMessage() for r in caplog.records if "PEMT_DECODER=auto" in r.getMessage()]
    assert len(lines) == 1 and "PyAV" in lines[0], lines
    assert all(w.decoder == "cpu" for w in windows)


def test_cpu_path_imports_no_torch(sample_media):
    code = (
        "import sys; from pemt.config import get_config; from pemt.media import load_windows;"
        f"load_windows({str(sample_media['clip'])!r}, get_config('tiny').media, decoder='auto');"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("audio_only", "no video stream"), ("yuv444", "not 8-bit 4:2:0"), ("mjpeg", "mjpeg")],
)
def test_files_nvdec_cannot_take_fall_back_per_file(
    name, reason, sample_media, odd_media, monkeypatch, caplog
):
    path = {**sample_media, **odd_media}[name]
    with pytest.raises(NvdecUnsupported, match=reason):
        NvdecSegmentStream(path, TINY, frames="pyav", device="cpu")
    # with a GPU present (which this machine cannot provide, hence the patch), the file still
    # decodes, with PyAV, and says so
    monkeypatch.setattr(_select, "nvdec_available", lambda: (True, ""))
    with caplog.at_level(logging.INFO, logger="pemt.media"):
        windows = load_windows(path, TINY, decoder="nvdec")
    assert windows and all(w.decoder == "cpu" for w in windows)
    assert any(reason in r.getMessage() and "PyAV" in r.getMessage() for r in caplog.records)


def test_file_objects_go_to_pyav(sample_media):
    with open(sample_media["clip"], "rb") as f, pytest.raises(NvdecUnsupported, match="file obj"):
        NvdecSegmentStream(f, TINY, frames="pyav", device="cpu")


# --- shared geometry and timing -------------------------------------------------------------


def test_geometry_rules():
    assert scaled_size(1280, 720, None, 0, 128, 1 << 30) == (227, 128)  # long side floored
    assert scaled_size(128, 72, None, -90, 128, 1 << 30) == (227, 128)  # portrait, stored wide
    assert crop_offset(227, 128) == 50 and crop_offset(129, 128) == 1  # ceil((L - S) / 2)
    clock = SlotClock(get_config("paper").media, 30.0)  # AVBERT: 64 source frames per segment
    assert clock.target(0) == 0.0 and clock.target(32) == 2.0
    assert abs(clock.target(31) - (2.0 - 1 / 30)) < 1e-9  # the segment's last source frame
    w = chroma_weights(8, 6, 0.0, pairs=True)
    assert np.array_equal(w[0], w[1]) and np.allclose(w.sum(1), 1.0)


# --- tensor contract: both backends, same windows -------------------------------------------

# allowed mean and max abs difference of frames, in levels (bench/results/gpu_path.md): where
# the scaled width is odd, swscale interpolates chroma for every pixel and the two agree to
# within 1 level (test_conversion_matches_swscale); where it is even, swscale's packed-RGB
# path shares chroma between pixel pairs and rounds through tables (about 1.5 mean, max 4-9)
MEAN_TOL, MAX_TOL = 2.0, 10
CASES = ["clip", "portrait", "vfr", "long", "mpeg4", "webm", "bigbuckbunny"]


@pytest.mark.parametrize("name", CASES)
def test_both_backends_give_the_same_windows(name, sample_media):
    if name not in sample_media:
        pytest.skip(f"{name} sample not installed")
    media = get_config("tiny").media
    cpu = list(iter_windows(sample_media[name], media, decoder="cpu"))
    ref = _reference_windows(sample_media[name], media)
    assert len(cpu) == len(ref) > 0
    for a, b in zip(cpu, ref, strict=True):
        assert (a.index, a.start, a.end) == (b.index, b.start, b.end)
        assert np.array_equal(a.visual_mask, b.visual_mask)
        assert np.array_equal(a.audio_mask, b.audio_mask)
        assert np.array_equal(a.audio, b.audio)  # the same PyAV audio path
        assert a.frames.shape == b.frames.shape and b.frames.dtype == np.uint8
        diff = np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16))
        assert diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL, (diff.mean(), diff.max())
        assert a.thumbnail.shape == b.thumbnail.shape
        assert b.decoder == "nvdec" and a.decoder == "cpu"
    for windows in (cpu, ref):  # the model-input contract of pemt.spec
        batch_windows(windows, media)


def test_the_same_frames_are_chosen(odd_media):
    """The time code in the test pattern says which source frame filled each slot: both
    backends must pick the same one (10 fps: a wrong pick is 0.1 s off; colour rounding moves
    the reading by under 0.03 s)."""
    from pemt.media.encode import pattern_time

    media = get_config("tiny").media
    cpu = load_windows(odd_media["10fps"], media, decoder="cpu")
    ref = _reference_windows(odd_media["10fps"], media)
    for a, b in zip(cpu, ref, strict=True):
        for seg in range(int(a.visual_mask.sum())):
            for j in range(media.frames_per_segment):
                ta, tb = pattern_time(a.frames[seg, j]), pattern_time(b.frames[seg, j])
                assert abs(ta - tb) < 0.05, (seg, j, ta, tb)


def test_conversion_matches_swscale(sample_media):
    """Frame by frame on real 720p H.264 (BT.601 limited range, left-sited chroma), the torch
    conversion against PyAV/swscale: crops at 128 px (odd scaled width 227) within 1 level,
    thumbnails (even width 284) within the packed-RGB tolerance."""
    import av

    from pemt.media._decode import _Converter
    from pemt.media._geometry import ColorSpec
    from pemt.media._nvdec import TorchConverter

    if "bigbuckbunny" not in sample_media:
        pytest.skip("bigbuckbunny sample not installed")
    with av.open(str(sample_media["bigbuckbunny"])) as c:
        s = c.streams.video[0]
        frames = [f for i, f in zip(range(60), c.decode(s), strict=False) if i % 15 == 0]
        cpu = _Converter(128, s.sample_aspect_ratio)
        ref = TorchConverter(128, s.sample_aspect_ratio, 0, ColorSpec(), torch.device("cpu"), False)
        nv12 = [torch.from_numpy(f.to_ndarray(format="nv12")) for f in frames]
        a = np.stack([cpu.crop(f) for f in frames]).astype(np.int16)
        b = ref.stack([ref.crop(x) for x in nv12]).astype(np.int16)
        assert np.abs(a - b).mean() < 0.05 and np.abs(a - b).max() <= 1
        ta = cpu.thumbnail(frames[0]).astype(np.int16)
        tb = ref.thumbnail(nv12[0]).astype(np.int16)
        assert ta.shape == tb.shape == (160, 284, 3)
        assert np.abs(ta - tb).mean() <= MEAN_TOL and np.abs(ta - tb).max() <= MAX_TOL


def test_bad_files_raise_the_same_media_errors(sample_media):
    for bad in ("corrupt", "truncated", "empty", "text"):
        with pytest.raises(MediaError) as cpu_err:
            load_windows(sample_media[bad], TINY, decoder="cpu")
        with pytest.raises(MediaError) as ref_err:
            _reference_windows(sample_media[bad])
        assert cpu_err.value.code == ref_err.value.code, bad


# --- the real NVDEC (GPU machines only) -------------------------------------------------------


@gpu
def test_nvdec_matches_pyav_on_h264(sample_media):
    media = get_config("tiny").media
    for name in ("clip", "long", "portrait"):
        cpu = load_windows(sample_media[name], media, decoder="cpu")
        gpu_w = load_windows(sample_media[name], media, decoder="nvdec")
        assert [w.decoder for w in gpu_w] == ["nvdec"] * len(cpu)
        for a, b in zip(cpu, gpu_w, strict=True):
            diff = np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16))
            assert diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL


@gpu
def test_nvdec_keeps_frames_on_the_gpu(sample_media):
    windows = load_windows(sample_media["clip"], TINY, decoder="nvdec", device_frames=True)
    assert windows[0].frames.is_cuda and windows[0].frames.dtype == torch.uint8


@pytest.fixture(scope="module")
def odd_media(tmp_path_factory):
    """Video NVDEC does not take: 4:4:4 H.264 and Motion JPEG (written with PyAV); and a
    10-fps H.264 clip whose frames are far apart in time."""
    import av

    from pemt.media.encode import make_test_video, pattern_frame

    root = tmp_path_factory.mktemp("odd-media")
    out = {"10fps": make_test_video(root / "10fps.mp4", seconds=3, width=64, height=48, fps=10)}
    for name, codec, pix, suffix in (
        ("yuv444", "libx264", "yuv444p", ".mp4"),
        ("mjpeg", "mjpeg", "yuvj420p", ".avi"),
    ):
        path = root / f"{name}{suffix}"
        with av.open(str(path), "w") as c:
            s = c.add_stream(codec, rate=10)
            s.width, s.height, s.pix_fmt = 64, 48, pix
            for i in range(10):
                frame = av.VideoFrame.from_ndarray(pattern_frame(i / 10, 64, 48), format="rgb24")
                for p in s.encode(frame.reformat(format=pix)):
                    c.mux(p)
            for p in s.encode(None):
                c.mux(p)
        out[name] = path
    return out
