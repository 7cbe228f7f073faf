"""PEMT computes what AVBERT computes: golden tensors made by running AVBERT's own public code.

``tests/data/avbert-golden`` (its README says what each file holds) comes from AVBERT at commit
01c12b7, run unmodified on the CPU in fp32. Tolerance: 1e-4 max abs on every float32 tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pemt.config import MediaConfig, ModelConfig, get_config
from pemt.media import log_mel
from pemt.model.avbert import (
    AVBertHead,
    derive_config,
    from_avbert,
    read_checkpoint,
    to_avbert,
)

GOLDEN = Path(__file__).parent / "data" / "avbert-golden"
ATOL = 1e-4


def _base_tiny() -> ModelConfig:
    """What the tiny AVBERT's tensor shapes cannot tell (tiny/config.json): 2 heads, 2 layers,
    S=2 segments of 4 frames at 15 fps (NUM_FRAMES 4, SAMPLING_RATE 2, TARGET_FPS 30), 48 px."""
    return get_config("paper").replace(
        media=MediaConfig(fps=15, frames_per_segment=4, num_segments=2, image_size=48), positions=8
    )


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN / "tiny" / "io.safetensors"))


@pytest.fixture(scope="module")
def state():
    return read_checkpoint(GOLDEN / "tiny" / "checkpoint.pyth")


@pytest.fixture(scope="module")
def imported(state):
    cfg = derive_config(state, _base_tiny(), heads=2, layers=2)
    model, report = from_avbert(state, cfg)
    return model, report


def _close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = float((got.float() - want.float()).abs().max())
    assert err <= ATOL, f"{name}: max abs diff {err:.2e} > {ATOL}"


def test_import_maps_every_tensor(imported):
    model, report = imported
    cfg = model.cfg
    sizes = (cfg.visual_width, cfg.visual_blocks, cfg.audio_width, cfg.audio_blocks)
    assert sizes == (3, (2, 2, 2, 2), 2, (2, 2, 2, 2))
    assert (cfg.hidden, cfg.ffn, cfg.rank, cfg.positions, cfg.sharing) == (32, 128, 8, 8, "full")
    # 757 entries = 467 read + 264 aliases of the shared transformer + 18 cached _B + 8 head
    assert (report.mapped, report.aliases, report.rotations, len(report.head)) == (467, 264, 18, 8)
    assert report.parameters == 74_536  # AVBert's unique parameter elements (tiny/config.json)
    assert report.rotation_error < 1e-5


def test_every_intermediate_matches(imported, golden):
    model, _ = imported
    b, s = 2, 2
    vis = golden["input.visual_seq"].reshape(b * s, 3, 4, 48, 48)  # (B*S, C, F, H, W), normalized
    aud = golden["input.audio_seq"].reshape(b * s, 1, 80, 128)  # (B*S, 1, M, A)
    with torch.no_grad():
        for name, cnn, x in (
            ("visual_cnn", model.visual_cnn, vis),
            ("audio_cnn", model.audio_cnn, aud),
        ):
            x = cnn.stem(x)
            _close(f"{name}.s1_out", x[:1], golden[f"{name}.s1_out.b0s0"])
            for i, stage in enumerate(cnn.stages):
                x = stage(x)
                key = f"{name}.s{i + 2}_out.b0s0" if i < 3 else f"{name}.s5_feature_map"
                _close(key, x[:1] if i < 3 else x, golden[key])
            _close(
                f"{name}.pooled",
                cnn(vis if name == "visual_cnn" else aud).reshape(b, s, -1),
                golden[f"{name}.pooled"],
            )

        vf, af = golden["visual_cnn.pooled"], golden["audio_cnn.pooled"]
        _close("visual.fc_out", model.visual_fc(vf), golden["visual.fc_out"])
        _close("visual.norm_out", model.visual_norm(model.visual_fc(vf)), golden["visual.norm_out"])
        _close("audio.fc_out", model.audio_fc(af), golden["audio.fc_out"])
        _close("audio.norm_out", model.audio_norm(model.audio_fc(af)), golden["audio.norm_out"])

        calls: list[torch.Tensor] = []
        hook = model.transformers.layers[0].register_forward_hook(lambda m, i, o: calls.append(o))
        embeds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def keep(name: str):
            def hook(module, inputs, output) -> None:  # a hook that returns None keeps the output
                embeds[name] = (inputs[0], output)

            return hook

        hooks = [
            getattr(model, f"{n}_embed").register_forward_hook(keep(n))
            for n in ("visual", "audio", "multi")
        ]
        ones = torch.ones(b, s, dtype=torch.bool)
        v, a, m = model.streams(vf, af, ones, ones)
        out = model.forward_features(vf, af, ones, ones)
        hook.remove()
        for h in hooks:
            h.remove()

    for stream, got in (("visual", v), ("audio", a)):
        _close(
            f"{stream}.tokens_with_start", embeds[stream][0], golden[f"{stream}.tokens_with_start"]
        )
        _close(f"{stream}.embeddings_out", embeds[stream][1], golden[f"{stream}.embeddings_out"])
        _close(f"{stream}.transformer_out", got, golden[f"{stream}.transformer_out"])
    # the one shared layer runs 2 times per pass: visual, audio, then multimodal
    layer_out = {"visual": calls[0:2], "audio": calls[2:4], "multi": calls[4:6]}
    for stream, outs in layer_out.items():
        _close(
            f"{stream}.layer_outputs", torch.stack(outs), golden[f"{stream}.layer_outputs"]
        )  # (L, B, N, D)
    _close("multi.input", embeds["multi"][0], golden["multi.input"])
    _close("multi.embeddings_out", embeds["multi"][1], golden["multi.embeddings_out"])
    _close("multi.output", m, golden["multi.output"])
    start = golden["multi.start_token_index"].tolist()
    assert start == [0, 1 + s]
    _close("multi.visual_start_token", m[:, start[0]], golden["multi.visual_start_token"])
    _close("multi.audio_start_token", m[:, start[1]], golden["multi.audio_start_token"])
    # the served vectors are these start tokens, normalized (docs/ARCHITECTURE.md)
    want = F.normalize(
        golden["multi.visual_start_token"] + golden["multi.audio_start_token"], dim=-1
    )
    _close("embedding", out["embedding"], want)
    _close(
        "visual_embedding",
        out["visual_embedding"],
        F.normalize(golden["visual.transformer_out"][:, 0], dim=-1),
    )
    _close(
        "audio_embedding",
        out["audio_embedding"],
        F.normalize(golden["audio.transformer_out"][:, 0], dim=-1),
    )


def test_first_factored_projection_step_by_step(imported, golden):
    model, _ = imported
    q = model.transformers.layers[0].q  # layer 0 query, visual group
    x = golden["debug.factor_query_visual_l0.in"]
    with torch.no_grad():
        h = F.linear(x, q.v["visual"])
        _close("ms0_linear", h, golden["debug.factor_query_visual_l0.ms0_linear"])
        h = F.normalize(h, dim=-1)
        _close("l2norm", h, golden["debug.factor_query_visual_l0.l2norm"])
        h = h @ q.rotation("visual")
        _close("rotated", h, golden["debug.factor_query_visual_l0.rotated"])
        _close("out", q.u(h), golden["debug.factor_query_visual_l0.out"])
        _close("module", q(x, "visual"), golden["debug.factor_query_visual_l0.out"])


def test_folded_model_matches_golden(imported, golden):
    from pemt.model import fold

    model, _ = imported
    folded = fold(model).eval()
    ones = torch.ones(2, 2, dtype=torch.bool)
    with torch.no_grad():
        _, _, m = folded.streams(
            golden["visual_cnn.pooled"], golden["audio_cnn.pooled"], ones, ones
        )
    _close("folded multi.output", m, golden["multi.output"])


def test_classifier_head(state, imported, golden):
    model, _ = imported
    head = AVBertHead.from_avbert(state, model.cfg)
    with torch.no_grad():
        clip, seq = head(
            golden["visual_cnn.pooled"], golden["audio_cnn.pooled"], golden["multi.output"]
        )
    _close("head.clip_prob", clip, golden["head.clip_prob"])
    _close("head.seq_prob", seq, golden["head.seq_prob"])


def test_safetensors_with_avbert_names_imports_the_same(imported):
    model, _ = imported
    sd = read_checkpoint(GOLDEN / "tiny" / "weights.safetensors")
    again, report = from_avbert(sd, model.cfg)
    assert report.mapped == 467
    for (k, x), (_, y) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(x, y), k


def test_round_trip_through_avbert_layout_every_mode():
    """Our model -> AVBERT's state dict -> import gives the same outputs, for each sharing mode
    (the golden data covers `full`; this covers the key layouts of the other three)."""
    base = get_config("tiny")
    g = torch.Generator().manual_seed(0)
    for mode in ("none", "layers", "layers+partial", "full"):
        cfg = base.replace(sharing=mode)
        model = _randomized(cfg, g)
        sd = {k.removeprefix("avbert."): v for k, v in to_avbert(model).items()}
        derived = derive_config(sd, base, heads=cfg.heads, layers=cfg.layers)
        assert derived.sharing == mode and derived.replace(name=cfg.name) == cfg
        again, _ = from_avbert(sd, derived)
        x = {
            "visual_features": torch.randn(2, 4, cfg.visual_dim, generator=g),
            "audio_features": torch.randn(2, 4, cfg.audio_dim, generator=g),
            "visual_mask": torch.ones(2, 4, dtype=torch.bool),
            "audio_mask": torch.ones(2, 4, dtype=torch.bool),
        }
        with torch.no_grad():
            want, got = model.forward_features(**x), again.forward_features(**x)
        for k in want:
            assert torch.allclose(want[k], got[k], atol=1e-6), (mode, k)


def _randomized(cfg: ModelConfig, g: torch.Generator):
    from pemt.model import PEMT

    model = PEMT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if ".a." in name else 0.1))
    return model


def test_full_manifest_imports_into_paper():
    """Every key and shape of AVBERT's default model (Kinetics-Sounds config) maps into `paper`."""
    manifest = json.loads((GOLDEN / "full" / "state_dict_manifest.json").read_text())
    sd: dict[str, torch.Tensor] = {}
    for e in manifest["keys"]:  # tensors first (zeros; base = I so that _B = I), aliases after
        key = e["key"].removeprefix("avbert.")
        if not e["alias_of"]:
            dtype = torch.int64 if e["dtype"] == "int64" else torch.float32
            eye = key.endswith((".base", "._B"))
            sd[key] = torch.eye(e["shape"][0]) if eye else torch.zeros(e["shape"], dtype=dtype)
    for e in manifest["keys"]:
        if e["alias_of"]:
            sd[e["key"].removeprefix("avbert.")] = sd[e["alias_of"].removeprefix("avbert.")]
    assert len(sd) == 1063
    cfg = derive_config(sd, get_config("paper"))
    model, report = from_avbert(sd, cfg)
    paper = get_config("paper")
    assert cfg.replace(name="paper") == paper, "AVBERT's default model is the paper config"
    head = len([k for k in sd if k.startswith(("concat_head.", "concat_seq_head."))])
    assert report.mapped + report.aliases + report.rotations + head == 1063
    assert (
        report.parameters
        == manifest["counts"]["AVBert only (keys under 'avbert.')"]["parameter_elements_unique"]
    )


def test_logmel_matches_avbert_recipe():
    g = load_file(str(GOLDEN / "frontend" / "logmel.safetensors"))
    spec = json.loads((GOLDEN / "frontend" / "frontend.json").read_text())
    cfg = MediaConfig(fps=15, frames_per_segment=32, num_segments=10)  # AVBERT's Kinetics-Sounds
    assert cfg.audio_samples_per_segment == spec["examples"]["default_segment"]["samples"]
    assert (cfg.n_fft, cfg.hop_length) == (1472, 736)
    for name in ("", "short."):
        got = log_mel(g[f"{name}waveform"][0].numpy(), cfg)
        want = g[f"{name}log_mel"][0].numpy()
        assert np.abs(got - want).max() <= ATOL, name
