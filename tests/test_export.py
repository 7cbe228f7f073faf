"""Export: fold parity, ONNX Runtime parity, config.pbtxt vs ONNX graph vs pemt.spec, failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("tritonclient.grpc")

from pemt import spec  # noqa: E402
from pemt.config import SHARING_MODES, ModelConfig, get_config  # noqa: E402
from pemt.export import (  # noqa: E402
    BuildOptions,
    ExportError,
    build,
    check_repository,
    compare,
    onnx_io,
    ort_run,
    ort_session,
    parse_config,
    plan_repository,
    random_inputs,
)
from pemt.export._onnx import SingleWrapper, torch_run  # noqa: E402
from pemt.model import build_model, fold, save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ATOL, RTOL = 1e-4, 1e-3


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save(build_model(get_config("tiny")).eval(), path)
    return path


@pytest.fixture(scope="module")
def single_repo(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The documented command, run once from the repo root: (repository, stdout)."""
    out = tmp_path_factory.mktemp("single") / "repo"
    r = subprocess.run(
        [
            sys.executable,
            "export/build_engine.py",
            "--checkpoint",
            str(tiny_ckpt),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    return out, r.stdout


@pytest.fixture(scope="module")
def ensemble_repo(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("ensemble")
    opts = BuildOptions(
        tiny_ckpt, out=out, layout="ensemble", triton_backend="python", parity_batch=2
    )
    return out, build(opts, log=lambda _: None)


@pytest.mark.parametrize("sharing", SHARING_MODES)
def test_fold_matches_factored(sharing: str) -> None:
    cfg = get_config("tiny", sharing=sharing)
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    folded = fold(model).eval()
    x = random_inputs(spec.model_inputs(cfg), batch=3, seed=2)
    names = [s.name for s in spec.model_outputs(cfg)]
    ref = torch_run(SingleWrapper(model, cfg), x, names)
    got = torch_run(SingleWrapper(folded, cfg), x, names)
    p = compare("fold", got, ref, atol=ATOL, rtol=RTOL)
    assert p.ok, p.line()
    for name, arr in got.items():
        assert np.isfinite(arr).all(), name
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in folded.modules()), (
        "folded model still has parametrizations"
    )


def test_cli_single_onnxruntime(single_repo: tuple[Path, str]) -> None:
    """Exit 0, summary table, config.pbtxt == ONNX graph == pemt.spec."""
    out, stdout = single_repo
    for row in ("fold parity (random)", "ORT vs PyTorch (clip)", "params factored", "TensorRT"):
        assert row in stdout
    cfg = get_config("tiny")
    config = parse_config(out / "pemt" / "config.pbtxt")
    # the GPU default: batch 32 (measured 3.7x batch 1's clips/s on an H200), preferred 8/16/32
    assert config.backend == "onnxruntime" and config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    accel = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel[0].name == "tensorrt" and accel[0].parameters["precision_mode"] == "FP32"
    # warmup at load: batch 1 and the largest batch (the accelerator's engine covers 1..32)
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [
        ("pemt_batch_1", 1),
        ("pemt_batch_32", 32),
    ]
    mask = config.model_warmup[0].inputs["visual_mask"]
    ones = (out / "pemt" / "warmup" / mask.input_data_file).read_bytes()
    assert ones == b"\x01" * cfg.media.num_segments  # one batch row: every segment real
    assert config.model_warmup[0].inputs["frames"].random_data
    # config.pbtxt, ONNX graph and pemt.spec agree, checked here independently of the builder
    gin, gout = onnx_io(out / "pemt" / "1" / "model.onnx")
    for got_cfg, got_onnx, want in (
        (config.input, gin, spec.model_inputs(cfg)),
        (config.output, gout, spec.model_outputs(cfg)),
    ):
        assert [t.name for t in got_cfg] == [t.name for t in got_onnx] == [t.name for t in want]
        for c, o, w in zip(got_cfg, got_onnx, want, strict=True):
            assert tuple(c.dims) == w.shape and o.shape == (-1, *w.shape)
            assert o.dtype == w.dtype
    plan = plan_repository(cfg, "pemt", "single", 32)
    assert check_repository(out, plan, backend="onnxruntime", engine=False) == []
    # the model travels with the config that built it (the server reads either)
    assert ModelConfig.from_dict(json.loads(config.parameters["pemt.config"].string_value)) == cfg
    import onnx

    meta = {
        p.key: p.value for p in onnx.load(str(out / "pemt" / "1" / "model.onnx")).metadata_props
    }
    assert ModelConfig.from_dict(json.loads(meta["pemt.config"])) == cfg


def test_onnx_dynamic_batch_and_parity(tiny_ckpt: Path, single_repo: tuple[Path, str]) -> None:
    out, _ = single_repo
    cfg = get_config("tiny")
    from pemt.model import load

    model = load(tiny_ckpt)
    sess = ort_session(out / "pemt" / "1" / "model.onnx")
    names = [s.name for s in spec.model_outputs(cfg)]
    for batch in (1, 5):  # neither is the batch the graph was traced with
        x = random_inputs(spec.model_inputs(cfg), batch=batch, seed=batch)
        got = ort_run(sess, x)
        ref = torch_run(SingleWrapper(model, cfg), x, names)
        p = compare(f"batch {batch}", got, ref, atol=ATOL, rtol=RTOL)
        assert p.ok, p.line()
        assert got["embedding"].shape == (batch, cfg.hidden)


def test_ensemble_python_backend(ensemble_repo: tuple[Path, Any]) -> None:
    tmp_path, report = ensemble_repo
    assert report.clip.startswith("clip.mp4")  # parity ran on a real decoded clip too
    assert all(p.ok for p in report.parities)
    cfg = get_config("tiny")
    plan = plan_repository(cfg, "pemt", "ensemble", 8)
    assert [e.name for e in plan.entries] == [
        "to_segments",
        "visual_cnn",
        "audio_cnn",
        "to_windows",
        "transformer",
        "pemt",
    ]
    assert check_repository(tmp_path, plan, backend="python", engine=False) == []
    ens = parse_config(tmp_path / "pemt" / "config.pbtxt")
    assert ens.platform == "ensemble"
    assert [t.name for t in ens.input] == [t.name for t in spec.model_inputs(cfg)]
    assert [t.name for t in ens.output] == [t.name for t in spec.model_outputs(cfg)]
    vis = parse_config(tmp_path / "visual_cnn" / "config.pbtxt")
    assert tuple(vis.input[0].dims) == spec.visual_cnn_inputs(cfg)[0].shape
    assert vis.max_batch_size == 8 * cfg.media.num_segments  # batches per segment
    assert vis.backend == "python" and vis.instance_group[0].kind == vis.instance_group[0].KIND_CPU
    assert (tmp_path / "visual_cnn" / "1" / "model.py").is_file()


def test_check_repository_catches_mismatch(single_repo: tuple[Path, str], tmp_path: Path) -> None:
    shutil.copytree(single_repo[0], tmp_path, dirs_exist_ok=True)
    cfg = get_config("tiny")
    plan = plan_repository(cfg, "pemt", "single", 8)
    path = tmp_path / "pemt" / "config.pbtxt"
    text = path.read_text()
    path.write_text(
        text.replace("TYPE_UINT8", "TYPE_FP32").replace('name: "audio_mask"', 'name: "mask"')
    )
    problems = check_repository(tmp_path, plan, backend="onnxruntime", engine=False)
    assert any("input frames: dtype TYPE_FP32, pemt.spec says uint8" in p for p in problems), (
        problems
    )
    assert any("input 'audio_mask' missing" in p for p in problems), problems
    assert any("inputs ['mask'] are not in pemt.spec" in p for p in problems), problems
    path.write_text("name: [unclosed")
    problems = check_repository(tmp_path, plan, backend="onnxruntime", engine=False)
    assert problems and "does not parse" in problems[0]
    path.write_text(text)
    (tmp_path / "pemt" / "warmup" / "audio_mask.ones").write_bytes(b"\x01")
    problems = check_repository(tmp_path, plan, backend="onnxruntime", engine=False)
    assert any("audio_mask needs" in p and "of 4 bytes" in p for p in problems), problems


def test_exports_add_versions_and_refuse_other_interfaces(
    single_repo: tuple[Path, str], tmp_path: Path
) -> None:
    """Each export is the next version of its model (Triton and the ONNX backend serve the
    newest); the oldest beyond KEEP_VERSIONS go; a model with other tensors or another model
    config is refused before anything moves."""
    from pemt.export._triton import KEEP_VERSIONS, install_repository, model_versions
    from server.backends.repository import find_onnx

    plan = plan_repository(get_config("tiny"), "pemt", "single", 32)
    out = tmp_path / "repo"

    def stage(edit: Any = None) -> Path:
        """A staged model as build() leaves it: config.pbtxt, warmup/, 1/."""
        staged = tmp_path / "stage"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(single_repo[0] / "pemt", staged / "pemt")
        if edit is not None:
            config = staged / "pemt" / "config.pbtxt"
            config.write_text(edit(config.read_text()))
        return staged

    for n in range(1, KEEP_VERSIONS + 2):
        assert install_repository(stage(), out, plan) == {"pemt": n}
        assert find_onnx(out, "pemt") == out / "pemt" / str(n) / "model.onnx"
    assert model_versions(out / "pemt") == list(range(2, KEEP_VERSIONS + 2))
    assert check_repository(out, plan, backend="onnxruntime", engine=False) == []
    assert parse_config(out / "pemt" / "config.pbtxt").version_policy.latest.num_versions == 1

    before = sorted(str(p) for p in out.rglob("*"))
    for edit, reason in (
        (lambda t: t.replace("dims: [4, 32]", "dims: [4, 64]"), "output audio_tokens: shape"),
        (lambda t: t.replace('\\"hidden\\": 32', '\\"hidden\\": 33'), "parameters ['pemt.config']"),
        (
            lambda t: t.replace("max_batch_size: 32", "max_batch_size: 4"),
            "max_batch_size 32, now 4",
        ),
    ):
        with pytest.raises(ValueError, match="export under another --name") as e:
            install_repository(stage(edit), out, plan)
        assert reason in str(e.value), str(e.value)
    assert sorted(str(p) for p in out.rglob("*")) == before  # nothing moved


def test_ensemble_check_catches_broken_dataflow(
    ensemble_repo: tuple[Path, Any], tmp_path: Path
) -> None:
    shutil.copytree(ensemble_repo[0], tmp_path, dirs_exist_ok=True)
    plan = plan_repository(get_config("tiny"), "pemt", "ensemble", 8)
    path = tmp_path / "pemt" / "config.pbtxt"
    text = path.read_text()
    cut = text.rindex('value: "_visual_windows"')  # the transformer's input, not the producer
    path.write_text(
        text[:cut] + 'value: "_nowhere"' + text[cut + len('value: "_visual_windows"') :]
    )
    problems = check_repository(tmp_path, plan, backend="python", engine=False)
    assert any("'_nowhere' before any step produces it" in p for p in problems), problems


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "export/build_engine.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_clear_failures(tiny_ckpt: Path, tmp_path: Path) -> None:
    """A bad checkpoint: exit 1, one line on stderr that says what is wrong, nothing written."""
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    cases = [
        (tmp_path / "missing.safetensors", "checkpoint not found"),
        (garbage, "cannot load checkpoint"),
    ]
    for ckpt, message in cases:
        r = _cli("--checkpoint", str(ckpt), "--out", str(tmp_path / "out"))
        assert r.returncode == 1, (r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("build_engine: error: "), r.stderr
        assert message in lines[0], lines[0]
    assert not (tmp_path / "out" / "pemt").exists()  # nothing half-written


def test_library_rejects_bad_options(tiny_ckpt: Path, tmp_path: Path) -> None:
    def fails(match: str, **kw: Any) -> None:
        with pytest.raises(ExportError, match=match) as e:
            build(BuildOptions(tiny_ckpt, out=tmp_path, **kw), log=lambda _: None)
        assert "\n" not in str(e.value)

    fails("--layout 'sideways' is not one of", layout="sideways")
    fails("--max-batch must be >= 1", max_batch=0)
    fails("needs --triton-backend onnxruntime", format="tensorrt", triton_backend="python")
    try:
        import tensorrt  # noqa: F401

        has_trt = torch.cuda.is_available()
    except ImportError:
        has_trt = False
    if not has_trt:
        fails("--format tensorrt needs TensorRT and a CUDA GPU", format="tensorrt")
    assert not (tmp_path / "pemt").exists()
