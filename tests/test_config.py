"""Config variants and the tensor spec: the one definition everything else is checked against."""

import json
import subprocess
import sys
from pathlib import Path

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
from pemt.spec import (
    check_served,
    model_inputs,
    model_outputs,
    transformer_inputs,
    triton_request,
    visual_cnn_inputs,
)


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
    code = (
        "import sys, pemt, pemt.config, pemt.spec; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'tritonclient'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- pemt.spec.check_served: the one check of a served model, in each caller's vocabulary ---


def _served(specs, spelling, lead, dim=int):
    """``specs`` as a server reports them: ``spelling(spec)`` is the dtype string, ``lead`` the
    leading batch dims ([] for none), ``dim`` writes each other dim."""
    return [(s.name, spelling(s), [*lead, *map(dim, s.shape)]) for s in specs]


ORT = {"uint8": "tensor(uint8)", "float32": "tensor(float)", "bool": "tensor(bool)"}
VOCABULARIES = {  # name: (dtype spelling, batch dims, dim writer)
    "onnxruntime session": (lambda s: ORT[s.dtype], ["batch"], int),
    "triton metadata json": (lambda s: s.wire_dtype, ["-1"], str),  # int64 -> JSON strings
    "config.pbtxt": (lambda s: s.triton_dtype, [], int),  # dims leave the batch axis out
    "onnx graph": (lambda s: s.dtype, [-1], int),  # pemt.export.onnx_io
}


@pytest.mark.parametrize("vocabulary", VOCABULARIES)
def test_check_served_accepts_the_spec_in_every_vocabulary(vocabulary):
    spelling, lead, dim = VOCABULARIES[vocabulary]
    cfg = get_config("tiny")
    ins, outs = model_inputs(cfg), model_outputs(cfg)
    served_in, served_out = _served(ins, spelling, lead, dim), _served(outs, spelling, lead, dim)
    for exact in (False, True):
        problems = check_served(
            ins, outs, served_in, served_out, batch_axis=bool(lead), exact=exact
        )
        assert problems == [], problems
    # the same model checked against another config: each mismatch named, one line each
    small = get_config("small")
    problems = check_served(
        model_inputs(small), model_outputs(small), served_in, served_out, batch_axis=bool(lead)
    )
    frames = model_inputs(small)[0].shape
    want = f"({'batch, ' if lead else ''}{', '.join(map(str, frames))})"
    assert any(p.startswith("input frames: shape") and want in p for p in problems), problems
    assert any(p.startswith("output embedding: shape") for p in problems), problems


def test_check_served_names_each_kind_of_mismatch():
    cfg = get_config("tiny")
    ins, outs = model_inputs(cfg), model_outputs(cfg)
    good_in = _served(ins, lambda s: s.wire_dtype, [-1])
    good_out = _served(outs, lambda s: s.wire_dtype, [-1])

    def problems(served_in, served_out=good_out, exact=False):
        return check_served(ins, outs, served_in, served_out, batch_axis=True, exact=exact)

    frames = ("frames", "FP32", good_in[0][2])
    assert problems([frames, *good_in[1:]]) == ["input frames: dtype FP32, pemt.spec says uint8"]
    fixed = ("frames", "UINT8", [1, *good_in[0][2][1:]])
    assert "batch axis fixed at 1" in problems([fixed, *good_in[1:]])[0]
    assert problems(good_in[1:]) == [
        "input 'frames' missing (served: ['audio', 'visual_mask', 'audio_mask'])"
    ]
    extra = ("extra", "FP32", [-1])
    assert problems([*good_in, extra]) == [
        "inputs ['extra'] are not in pemt.spec (it has "
        "['frames', 'audio', 'visual_mask', 'audio_mask'])"
    ]
    # serving tolerates a dynamic served dim and extra outputs; export (exact) does not
    dynamic = ("audio", "FP32", [-1, -1, *good_in[1][2][2:]])
    assert problems([good_in[0], dynamic, *good_in[2:]]) == []
    assert "input audio: shape" in problems([good_in[0], dynamic, *good_in[2:]], exact=True)[0]
    assert problems(good_in, [*good_out, extra]) == []
    assert problems(good_in, [*good_out, extra], exact=True)
    swapped = [good_in[1], good_in[0], *good_in[2:]]
    assert problems(swapped) == []
    assert problems(swapped, exact=True) == [
        "inputs are ['audio', 'frames', 'visual_mask', 'audio_mask'], pemt.spec says "
        "['frames', 'audio', 'visual_mask', 'audio_mask'] in this order"
    ]


@pytest.mark.parametrize(
    "module", ["tritonclient.grpc", "tritonclient.grpc.aio", "tritonclient.http"]
)
def test_triton_request_builds_inputs_from_the_spec(module):
    import importlib

    client = importlib.import_module(module)
    cfg = get_config("tiny")
    ins, outs = model_inputs(cfg), model_outputs(cfg)
    rng = np.random.default_rng(0)
    arrays = {s.name: (rng.random((3, *s.shape)) * 255).astype(s.dtype) for s in ins}
    arrays["frames"] = np.asfortranarray(arrays["frames"])  # made contiguous on the way
    reqs, wanted = triton_request(client, ins, arrays, outs)
    assert [(r.name(), r.datatype(), r.shape()) for r in reqs] == [
        (s.name, s.wire_dtype, [3, *s.shape]) for s in ins
    ]
    assert [o.name() for o in wanted] == [s.name for s in outs]
    with pytest.raises(ValueError, match="audio: dtype float64"):
        triton_request(client, ins, {**arrays, "audio": arrays["audio"].astype(np.float64)}, outs)
    with pytest.raises(ValueError, match="missing input 'frames'"):
        triton_request(client, ins, {k: v for k, v in arrays.items() if k != "frames"}, outs)


def test_served_models_are_checked_and_requested_only_through_pemt_spec():
    """The check of a served model and the building of Triton inputs live in pemt.spec alone
    (the ONNX and Triton backends, the Triton client and export call it)."""
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for package in ("pemt", "server", "clients", "export"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            for needle in ("InferInput(", "InferRequestedOutput(", "pemt.spec says"):
                if needle in text and path != root / "pemt" / "spec.py":
                    offenders.append(f"{path.relative_to(root)}: {needle}")
    assert not offenders, offenders
