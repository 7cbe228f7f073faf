"""The spread layout follows AVBERT's test-time sampling: the worked examples that AVBERT's own
``KineticsSounds.__getitem__`` produced (tests/data/avbert-golden/frontend/sampling.json), first
as a rule, then through the real decoder on an H.264/AAC file whose frames carry their index."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pemt.config import MediaConfig, get_config
from pemt.media import iter_windows, load_windows, log_mel, spread_plan

SAMPLING = json.loads(
    (Path(__file__).parent / "data" / "avbert-golden" / "frontend" / "sampling.json").read_text()
)
# AVBERT's Kinetics-Sounds test setting: 10 segments of 32 frames at stride 2 of 30 fps, 128 px
KS = MediaConfig(fps=15, frames_per_segment=32, num_segments=10, layout="spread", image_size=128)
LEVELS = 7  # a frame index is written as three base-7 digits, one per horizontal band


def _examples() -> list[dict]:
    return [e for e in SAMPLING["examples"] if "segments" in e]


@pytest.mark.parametrize("example", _examples(), ids=lambda e: e["name"])
def test_plan_reproduces_avbert_examples(example: dict) -> None:
    v = example["video"]
    plans = spread_plan(v["n_frames"], v["fps"], v["audio_samples"], KS)
    assert len(plans) == len(example["segments"]) == 10
    for plan, seg in zip(plans, example["segments"], strict=True):
        assert plan.start == pytest.approx(seg["start_idx"], abs=1e-9)
        assert list(plan.frames) == seg["frame_indices"], seg["segment"]
        assert [plan.audio_start, plan.audio_stop] == seg["audio_samples"], seg["segment"]


def test_video_shorter_than_one_segment_starts_every_segment_at_zero() -> None:
    # AVBERT raises ZeroDivisionError here (the last example); we sample from the start
    [short] = [e for e in SAMPLING["examples"] if "segments" not in e]
    assert "ZeroDivisionError" in short["error"]
    v = short["video"]
    plans = spread_plan(v["n_frames"], v["fps"], v["audio_samples"], KS)
    first = np.clip(np.linspace(0, 63, 32).astype(np.float32), 0, 44).astype(int).tolist()
    assert all(list(p.frames) == first and p.audio_start == 0 for p in plans)
    assert plans[0].audio_stop == v["audio_samples"]  # all the audio there is


def test_missing_modalities_plan_nothing() -> None:
    plans = spread_plan(0, 0.0, 44100, KS)
    assert all(p.frames == () for p in plans)
    assert all(p.audio_start == p.audio_stop == 0 for p in spread_plan(300, 30.0, 0, KS))


def _digits(i: int) -> list[int]:
    return [i % LEVELS, (i // LEVELS) % LEVELS, i // LEVELS**2]


def _indexed_video(
    path: Path, n: int, fps: int, width: int, height: int, seconds_audio: float
) -> Path:
    """H.264 (lossless) + AAC: frame i is three grey bands, top to bottom the base-7 digits of i."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"qp": "0", "preset": "veryfast"}
        vs.time_base = Fraction(1, fps)
        aus = out.add_stream("aac", rate=44100, layout="mono")
        for i in range(n):
            img = np.zeros((height, width, 3), np.uint8)
            for band, d in enumerate(_digits(i)):
                img[band * height // 3 : (band + 1) * height // 3] = 16 + 32 * d
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        t = np.arange(int(44100 * seconds_audio)) / 44100
        wave = (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)  # a chirp
        for k in range(0, len(wave), 1024):
            chunk = wave[k : k + 1024][None]
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            af.sample_rate, af.pts = 44100, k
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))
    return path


def _read_index(rgb: np.ndarray) -> int:
    h = rgb.shape[0]
    digits = [
        int(round((float(rgb[(2 * b + 1) * h // 6, :, 1].mean()) - 16) / 32)) for b in range(3)
    ]
    return digits[0] + LEVELS * digits[1] + LEVELS**2 * digits[2]


def _decoded_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=44100)
        parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in res.resample(fr)]
        parts += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    return np.concatenate(parts)


def test_decoder_picks_avbert_frames_and_audio(tmp_path: Path) -> None:
    example = _examples()[0]  # 10 s, 30 fps, landscape 180x240
    v = example["video"]
    path = _indexed_video(
        tmp_path / "indexed.mp4", v["n_frames"], 30, v["width"], v["height"], 10.0
    )
    [w] = load_windows(path, KS)
    assert w.frames.shape == (10, 32, 128, 128, 3) and w.visual_mask.all() and w.audio_mask.all()
    got = [[_read_index(w.frames[s, j]) for j in range(32)] for s in range(10)]
    want = [seg["frame_indices"] for seg in example["segments"]]
    assert got == want
    # the audio windows are the plan's, cut from the decoded track
    samples = _decoded_audio(path)
    plans = spread_plan(v["n_frames"], 30.0, len(samples), KS)
    for s in (0, 4, 9):
        p = plans[s]
        np.testing.assert_allclose(
            w.audio[s], log_mel(samples[p.audio_start : p.audio_stop], KS), atol=1e-4
        )
    assert w.start == 0.0 and w.end == pytest.approx(10.0, abs=0.05)


def test_spread_refuses_a_stride_and_works_as_a_registered_variant(tmp_path: Path) -> None:
    path = _indexed_video(tmp_path / "short.mp4", 60, 24, 64, 48, 2.5)  # 2.5 s at 24 fps
    with pytest.raises(ValueError, match="stride_s does not apply"):
        iter_windows(path, KS, stride_s=2.0)
    cfg = get_config("avbert-ks").media
    assert (cfg.layout, cfg.fps, cfg.frames_per_segment, cfg.num_segments) == ("spread", 15, 32, 10)
    [w] = load_windows(path, cfg)
    example = next(e for e in _examples() if e["video"]["fps"] == 24.0)  # 2.5 s, 24 fps
    got = [[_read_index(w.frames[s, j]) for j in range(32)] for s in range(10)]
    assert got == [seg["frame_indices"] for seg in example["segments"]]
