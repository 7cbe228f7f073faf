"""pemt.model: shapes, masks, sharing modes, parameter counts, fold parity, checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

import pemt  # noqa: E402
from pemt.cli import main as cli_main  # noqa: E402
from pemt.config import SHARING_MODES, ModelConfig, available_configs, get_config  # noqa: E402
from pemt.model import PEMT, build_model, count_parameters, fold, load, save  # noqa: E402
from pemt.model.transformer import Factored  # noqa: E402
from pemt.spec import model_outputs  # noqa: E402

# fp32 tolerance for factored vs folded: the same matrices, multiplied in another order
FOLD_TOL = {"rtol": 1e-4, "atol": 1e-5}


def shrink(cfg: ModelConfig, sharing: str | None = None) -> ModelConfig:
    """The variant at toy size: same media layout except a short, small window."""
    return cfg.replace(
        visual_width=4,
        visual_blocks=(1, 1, 1, 1),
        audio_width=4,
        audio_blocks=(1, 1, 1, 1),
        hidden=32,
        heads=2,
        layers=2,
        ffn=64,
        rank=8,
        sharing=sharing or cfg.sharing,
        media={"num_segments": 4, "image_size": 32, "fps": 4},
    )


def tiny(sharing: str = "full") -> ModelConfig:
    return get_config("tiny", sharing=sharing)


def inputs(cfg: ModelConfig, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs; row 0 full, row 1 last two segments padded, row 2 has no audio."""
    g = torch.Generator().manual_seed(seed)
    m, t = cfg.media, cfg.media.num_segments
    frames_shape = (batch, t, m.frames_per_segment, m.image_size, m.image_size, 3)
    vm = torch.ones(batch, t, dtype=torch.bool)
    am = torch.ones(batch, t, dtype=torch.bool)
    if batch >= 3:
        vm[1, -2:] = am[1, -2:] = False
        am[2] = False
    return {
        "frames": torch.randint(0, 256, frames_shape, generator=g, dtype=torch.uint8),
        "audio": torch.randn(batch, t, m.n_mels, m.audio_frames_per_segment, generator=g),
        "visual_mask": vm,
        "audio_mask": am,
    }


def random_model(cfg: ModelConfig, seed: int = 0) -> PEMT:
    """A model in eval mode whose weights (rotations included) are all perturbed."""
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def run(model: torch.nn.Module, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(x["frames"], x["audio"], x["visual_mask"], x["audio_mask"])


@pytest.mark.parametrize("sharing", SHARING_MODES)
@pytest.mark.parametrize("variant", available_configs())
def test_outputs_match_spec_and_are_finite(variant: str, sharing: str) -> None:
    cfg = shrink(get_config(variant), sharing)
    x = inputs(cfg)
    x["visual_mask"][2, :] = False  # row 2: no modality at all
    out = run(random_model(cfg), x)
    spec = model_outputs(cfg)
    assert list(out) == [s.name for s in spec]
    for s in spec:
        assert tuple(out[s.name].shape) == (3, *s.shape), s.name
        assert out[s.name].dtype == torch.float32
        assert torch.isfinite(out[s.name]).all(), s.name
    for name in ("embedding", "audio_embedding", "visual_embedding"):
        torch.testing.assert_close(out[name].norm(dim=-1), torch.ones(3))
    assert (out["audio_tokens"][2] == 0).all() and (out["visual_tokens"][1, -2:] == 0).all()


def test_config_level_facts() -> None:
    paper = get_config("paper")
    assert (paper.visual_dim, paper.audio_dim, paper.embed_dim) == (2048, 1024, 768)
    # 30-s clips of 480 frames (the paper): 15 segments of 32 frames at 16 fps
    assert paper.media.frames_per_segment == 32 and paper.media.num_segments == 15
    assert paper.media.window_seconds == 30.0 and paper.positions == 22
    for name in available_configs():
        assert get_config(name).hidden % get_config(name).heads == 0


def test_small_full_size_forward() -> None:
    cfg = get_config("small")
    out = run(build_model(cfg).eval(), inputs(cfg, batch=1))
    for s in model_outputs(cfg):
        assert tuple(out[s.name].shape) == (1, *s.shape) and torch.isfinite(out[s.name]).all()


@pytest.mark.parametrize("sharing", SHARING_MODES)
@pytest.mark.parametrize("training", [False, True])
def test_padded_content_changes_nothing(sharing: str, training: bool) -> None:
    cfg = tiny(sharing)  # dropout 0: training mode is deterministic too
    model = random_model(cfg).train(training)  # training: BatchNorm batch stats skip padding
    x = inputs(cfg)
    y = {k: v.clone() for k, v in x.items()}
    pad_v, pad_a = ~x["visual_mask"], ~x["audio_mask"]
    y["frames"][pad_v] = 255 - y["frames"][pad_v]
    y["audio"][pad_a] = float("nan")  # even garbage in a padded segment stays out
    a, b = run(model, x), run(model, y)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_padding_equals_a_shorter_window() -> None:
    cfg = tiny("full")
    model = random_model(cfg)
    x = inputs(cfg)
    with torch.no_grad():
        vf, af = model.encode_visual(x["frames"]), model.encode_audio(x["audio"])
        padded = model.forward_features(vf, af, x["visual_mask"], x["visual_mask"])
        short = model.forward_features(vf[1:2, :2], af[1:2, :2], *[x["visual_mask"][1:2, :2]] * 2)
    torch.testing.assert_close(padded["embedding"][1:2], short["embedding"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded["fused_tokens"][1:2, :2], short["fused_tokens"], **FOLD_TOL)


def test_bad_inputs_raise_value_error() -> None:
    cfg = tiny()
    model = build_model(cfg).eval()
    t, d = cfg.media.num_segments, cfg.visual_dim
    mask = torch.ones(1, t, dtype=torch.bool)
    with pytest.raises(ValueError, match="visual_dim"):
        model.forward_features(
            torch.zeros(1, t, d + 1), torch.zeros(1, t, cfg.audio_dim), mask, mask
        )
    n = cfg.positions  # one more segment than the position tables hold (row 0: start token)
    long = torch.ones(1, n, dtype=torch.bool)
    with pytest.raises(ValueError, match="positions"):
        model.forward_features(torch.zeros(1, n, d), torch.zeros(1, n, cfg.audio_dim), long, long)
    with pytest.raises(TypeError, match="ModelConfig"):
        PEMT(cfg.to_dict())  # type: ignore[arg-type]


@pytest.mark.parametrize("sharing", SHARING_MODES)
def test_every_parameter_gets_a_gradient(sharing: str) -> None:
    cfg = tiny(sharing)
    model = random_model(cfg).train()
    x = inputs(cfg)
    out = model(x["frames"], x["audio"], x["visual_mask"], x["audio_mask"])
    sum(v.square().sum() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


# Paper (AVBERT) transformer parameters: 127.6M no sharing, 21.3M across layers, 3.8M all.
PAPER_TRANSFORMERS = {
    "none": 127_581_696,
    "layers": 21_263_616,
    "layers+partial": 31_860_480,  # ours: U shared, full-rank V_m and R_m private (see docs)
    "full": 3_843_840,
}


@pytest.mark.parametrize("sharing", SHARING_MODES)
def test_paper_parameter_counts(sharing: str) -> None:
    with torch.device("meta"):
        counts = count_parameters(build_model(get_config("paper", sharing=sharing)))
    assert counts["transformers"] == PAPER_TRANSFORMERS[sharing]
    paper = {"none": 127.6e6, "layers": 21.3e6, "full": 3.8e6}
    if sharing in paper:
        assert abs(counts["transformers"] / paper[sharing] - 1) < 0.05
    assert abs(counts["visual_cnn"] / 31.7e6 - 1) < 0.02
    assert abs(counts["audio_cnn"] / 5.8e6 - 1) < 0.03
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    if sharing == "none":
        assert 155e6 <= counts["total"] <= 168e6


def test_params_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["params", "--config", "paper", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["config"] == "paper" and list(table["modes"]) == list(SHARING_MODES)
    assert table["modes"]["full"]["transformers"] == PAPER_TRANSFORMERS["full"]
    assert cli_main(["params", "--config", "tiny"]) == 0
    assert "transformers" in capsys.readouterr().out


@pytest.mark.parametrize("sharing", SHARING_MODES)
def test_fold_parity(sharing: str) -> None:
    cfg = tiny(sharing)
    model = random_model(cfg)
    folded = fold(model)
    x = inputs(cfg)
    a, b = run(model, x), run(folded, x)
    for k in a:
        torch.testing.assert_close(b[k], a[k], **FOLD_TOL)
    assert not any(isinstance(m, Factored) for m in folded.modules())
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in folded.modules())
    rotations = [
        n for n, _ in folded.named_parameters() if n.startswith("transformers.") and ".a." in n
    ]
    assert not rotations  # no matrix exponentials left
    factored = any(isinstance(m, Factored) for m in model.modules())
    assert factored == (sharing in ("layers+partial", "full"))  # the original is untouched


def test_fold_at_paper_width() -> None:
    torch.manual_seed(0)
    proj = Factored(768, 3072, 128)
    with torch.no_grad():
        for p in proj.a.values():
            p.normal_(std=0.1)
    x = torch.randn(4, 31, 768)
    with torch.no_grad():
        dense = proj.fold()
        for m in ("visual", "audio", "multimodal"):
            torch.testing.assert_close(dense(x, m), proj(x, m), **FOLD_TOL)


@pytest.mark.parametrize("folded", [False, True])
def test_save_load_round_trip_is_bit_exact(tmp_path, folded: bool) -> None:
    cfg = tiny("full")
    model = random_model(cfg)
    model = fold(model) if folded else model
    save(model, tmp_path / "ck.safetensors")
    (tmp_path / "dir").mkdir()
    pemt.save(model, tmp_path / "dir")  # a directory gets model.safetensors
    for path in (tmp_path / "ck.safetensors", tmp_path / "dir"):
        loaded = pemt.load(path)
        assert loaded.cfg == cfg and loaded.folded == folded and not loaded.training
        want, got = model.state_dict(), loaded.state_dict()
        assert list(want) == list(got)
        assert all(torch.equal(want[k], got[k]) for k in want)
        x = inputs(cfg)
        a, b = run(model, x), run(loaded, x)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_errors_name_the_problem(tmp_path) -> None:
    cfg = tiny("full")
    save(build_model(cfg), tmp_path / "ok.safetensors")
    tensors = load_file(tmp_path / "ok.safetensors")
    meta = {"pemt.config": cfg.to_json(), "pemt.folded": "false"}

    missing = dict(tensors)
    del missing["start.weight"]
    save_file(missing, tmp_path / "missing.safetensors", metadata=meta)
    with pytest.raises(ValueError, match=r"missing keys \[start.weight\]"):
        load(tmp_path / "missing.safetensors")

    save_file(
        {**tensors, "extra.weight": torch.zeros(2)}, tmp_path / "extra.safetensors", metadata=meta
    )
    with pytest.raises(ValueError, match=r"unexpected keys \[extra.weight\]"):
        load(tmp_path / "extra.safetensors")

    save_file(
        {**tensors, "start.weight": torch.zeros(3, 3)},
        tmp_path / "shape.safetensors",
        metadata=meta,
    )
    with pytest.raises(ValueError, match="shape mismatch: start.weight"):
        load(tmp_path / "shape.safetensors")

    save_file(tensors, tmp_path / "nometa.safetensors")
    with pytest.raises(ValueError, match="pemt.config"):
        load(tmp_path / "nometa.safetensors")

    (tmp_path / "garbage.safetensors").write_bytes(b"\x80\x04not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load(tmp_path / "garbage.safetensors")

    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load(tmp_path / "cut.safetensors")

    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nowhere.safetensors")


def test_import_pemt_does_not_import_torch() -> None:
    code = "import sys, pemt, pemt.config, pemt.spec; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class _TupleOutputs(torch.nn.Module):
    def __init__(self, model: PEMT) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(*args).values())


@pytest.mark.parametrize("sharing", ["none", "full"])
def test_folded_model_exports_to_onnx(tmp_path, sharing: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    cfg = tiny(sharing)
    model = fold(random_model(cfg))
    x = inputs(cfg)
    path = str(tmp_path / "model.onnx")
    names = [s.name for s in model_outputs(cfg)]
    torch.onnx.export(
        _TupleOutputs(model).eval(),  # eval wrapper: the exporter restores its mode afterwards
        tuple(x.values()),
        path,
        input_names=list(x),
        output_names=names,
        dynamic_axes={k: {0: "batch"} for k in [*x, *names]},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (3, 1):  # a batch size other than the traced one
        y = inputs(cfg, batch=batch, seed=1)
        got = session.run(names, {k: v.numpy() for k, v in y.items()})
        want = run(model, y)
        for name, g in zip(names, got, strict=True):
            torch.testing.assert_close(torch.from_numpy(g), want[name], rtol=1e-4, atol=1e-5)
