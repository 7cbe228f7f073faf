"""Config variants and the tensor spec: the one definition everything else is checked against."""

import json
import subprocess
import sys

import numpy as np
import pytest

from pemt.config import (
    SHARING_MODES,
    MediaConfig,
    ModelConfig,
    available_configs,
    get_config,
    load_config,
)
from pemt.spec import model_inputs, model_outputs, transformer_inputs, visual_cnn_inputs


def test_registered_variants():
    assert available_configs() == ["avbert-ks", "paper", "small", "tiny"]
    paper = get_config("paper")
    # AVBERT's shapes over the paper's 30-s clips: 15 segments of 32 frames at 16 fps, 128 px.
    assert (paper.visual_dim, paper.audio_dim, paper.hidden, paper.heads) == (2048, 1024, 768, 12)
    assert (paper.layers, paper.ffn, paper.rank, paper.sharing) == (6, 3072, 128, "full")
    assert paper.media.num_segments * paper.media.frames_per_segment == 480


def test_unknown_variant_names_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"available configs = \[.avbert-ks., .paper., .small., .tiny.\]"
    ):
        get_config("huge")


@pytest.mark.parametrize("bad", [{"sharing": "some"}, {"hidden": 33}, {"rank": 0}])
def test_bad_values_are_rejected(bad):
    with pytest.raises(ValueError):
        get_config("tiny", **bad)


def test_media_rejects_impossible_segments():
    with pytest.raises(ValueError, match="audio_frames"):
        MediaConfig(sample_rate=1000, audio_frames=1024)  # 2000 samples cannot make 1024 frames
    with pytest.raises(ValueError, match="even"):
        MediaConfig(frames_per_segment=15)
    with pytest.raises(ValueError, match="layout"):
        MediaConfig(layout="random")
    with pytest.raises(ValueError, match="positions"):
        get_config("tiny", positions=4)  # 4 segments + the start token need 5 rows


def test_segment_arithmetic_follows_avbert():
    # AVBERT's Kinetics-Sounds setting: 32 frames at stride 2 of 30 fps = 15 fps, 94080 samples
    ks = MediaConfig(fps=15, frames_per_segment=32, num_segments=10)
    assert abs(ks.segment_seconds - 64 / 30) < 1e-12
    assert (ks.audio_samples_per_segment, ks.n_fft, ks.hop_length) == (94080, 1472, 736)
    paper = get_config("paper").media  # 30-s clips of 480 frames: 15 segments of 2 s
    assert (paper.audio_samples_per_segment, paper.n_fft, paper.hop_length) == (88200, 1380, 690)
    for m in (ks, paper):
        assert 1 + m.audio_samples_per_segment // m.hop_length == m.audio_frames


def test_json_round_trip_and_unknown_keys(tmp_path):
    cfg = get_config("small", sharing="layers", media={"num_segments": 8})
    assert cfg.media.num_segments == 8
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    assert load_config(p) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "depth": 3})


def test_configs_are_frozen():
    cfg = get_config("tiny")
    with pytest.raises(AttributeError):
        cfg.hidden = 64  # type: ignore[misc]


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
def test_spec_shapes_follow_config(name):
    cfg = get_config(name)
    m = cfg.media
    ins = {s.name: s for s in model_inputs(cfg)}
    assert ins["frames"].shape == (
        m.num_segments,
        m.frames_per_segment,
        m.image_size,
        m.image_size,
        3,
    )
    assert ins["audio"].shape == (m.num_segments, m.n_mels, m.audio_frames_per_segment)
    assert ins["frames"].triton_dtype == "TYPE_UINT8" and ins["visual_mask"].wire_dtype == "BOOL"
    outs = {s.name: s.shape for s in model_outputs(cfg)}
    assert outs["embedding"] == (cfg.hidden,) and outs["fused_tokens"] == (
        m.num_segments,
        cfg.hidden,
    )
    assert transformer_inputs(cfg)[0].shape == (m.num_segments, cfg.visual_dim)
    assert visual_cnn_inputs(cfg)[0].shape == ins["frames"].shape[1:]


def test_spec_check_rejects_wrong_dtype_and_shape():
    frames = model_inputs(get_config("tiny"))[0]
    good = np.zeros((2, *frames.shape), np.uint8)
    frames.check(good)
    with pytest.raises(ValueError, match="dtype float32"):
        frames.check(good.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        frames.check(good[:, :2])


def test_sharing_modes_are_the_four_of_the_paper():
    assert SHARING_MODES == ("none", "layers", "layers+partial", "full")


def test_core_imports_no_torch():
    code = "import sys, pemt, pemt.config, pemt.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
