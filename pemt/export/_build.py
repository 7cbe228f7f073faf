"""checkpoint -> fold -> ONNX -> (TensorRT) -> Triton model repository, with every check in the run.

``build(BuildOptions(...))`` is what ``export/build_engine.py`` runs. Any failure raises
``ExportError`` with a one-line message; nothing is written to ``out`` unless every check passed
(the repository is staged in a temporary directory next to ``out`` and moved in at the end).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pemt import spec
from pemt.config import ModelConfig
from pemt.export._onnx import (
    AudioCNNWrapper,
    Parity,
    SingleWrapper,
    TransformerWrapper,
    VisualCNNWrapper,
    compare,
    export_onnx,
    ort_run,
    ort_session,
    random_inputs,
    torch_run,
)
from pemt.export._tensorrt import build_engine, run_engine, tensorrt_status
from pemt.export._triton import (
    PYTHON_MODEL_PY,
    RepositoryPlan,
    build_config,
    check_repository,
    install_repository,
    plan_repository,
    reshape_onnx,
    write_config,
)

__all__ = ["BuildOptions", "BuildReport", "ExportError", "build", "clip_inputs"]

PRECISIONS = ("fp32", "fp16")
FORMATS = ("onnx", "tensorrt", "all")
LAYOUTS = ("single", "ensemble")
BACKENDS = ("onnxruntime", "python")
# fp32 tolerances: folded vs factored, ONNX Runtime vs PyTorch; TensorRT fp16 gets its own
ATOL, RTOL = 1e-4, 1e-3
TRT_FP16_ATOL, TRT_FP16_RTOL = 2e-2, 2e-2


class ExportError(RuntimeError):
    """A build failed; ``str(e)`` is one line saying what and what to do."""


@dataclass
class BuildOptions:
    checkpoint: Path | None  # None only together with ``model`` (tests, benchmarks)
    out: Path = Path("model_repository")
    name: str = "pemt"
    precision: str = "fp32"  # fp16: TensorRT builds/runs in FP16; ONNX I/O stays per pemt.spec
    # windows per Triton batch; None: 32 for the GPU backend (the H200 runs batch 32 at 3.7x the
    # clips/s of batch 1, BENCHMARKS.md), 8 for the CPU python backend (CPU batches gain little)
    max_batch: int | None = None
    instances: int = 1  # model instances per GPU (or CPU) in the instance group
    format: str = "all"  # onnx | tensorrt (required) | all (engine when possible)
    layout: str = "single"
    triton_backend: str = "onnxruntime"
    parity_batch: int = 3
    real_clip: bool = True  # also check parity on a real decoded clip (pemt.media)
    model: Any = None  # an in-memory PEMT instead of a checkpoint


@dataclass
class BuildReport:
    name: str
    layout: str
    backend: str
    params_factored: int = 0
    params_folded: int = 0
    exporter: str = ""
    parities: list[Parity] = field(default_factory=list)
    tensorrt: str = ""
    files: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    clip: str = ""
    versions: dict[str, int] = field(default_factory=dict)  # model -> version written

    def table(self) -> str:
        rows = [
            ("model", f"{self.name} ({self.layout} layout, triton backend {self.backend})"),
            ("params factored -> folded", f"{self.params_factored:,} -> {self.params_folded:,}"),
            ("ONNX exporter", self.exporter),
            ("real clip", self.clip),
        ]
        rows += [(p.what, p.line().split(": ", 1)[1]) for p in self.parities]
        rows += [(f"version {k}", str(v)) for k, v in self.versions.items()]
        rows.append(("TensorRT", self.tensorrt))
        rows += [(f"file {k}", _size(v)) for k, v in self.files.items()]
        rows += [(f"time {k}", f"{v:.1f} s") for k, v in self.seconds.items()]
        w = max(len(r[0]) for r in rows)
        lines = [f"| {'item'.ljust(w)} | value |", f"| {'-' * w} | --- |"]
        lines += [f"| {k.ljust(w)} | {v} |" for k, v in rows]
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def max_batch(o: BuildOptions) -> int:
    """The batch bound the repository is built for (see ``BuildOptions.max_batch``)."""
    if o.max_batch is not None:
        return o.max_batch
    return 32 if o.triton_backend == "onnxruntime" else 8


def _validate(o: BuildOptions) -> None:
    for value, allowed, flag in (
        (o.precision, PRECISIONS, "--precision"),
        (o.format, FORMATS, "--format"),
        (o.layout, LAYOUTS, "--layout"),
        (o.triton_backend, BACKENDS, "--triton-backend"),
    ):
        if value not in allowed:
            raise ExportError(f"{flag} {value!r} is not one of {list(allowed)}")
    if o.max_batch is not None and o.max_batch < 1:
        raise ExportError(f"--max-batch must be >= 1, got {o.max_batch}")
    if o.instances < 1:
        raise ExportError(f"--instances must be >= 1, got {o.instances}")
    if o.parity_batch < 1:
        raise ExportError(f"parity batch must be >= 1, got {o.parity_batch}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", o.name):
        raise ExportError(f"--name {o.name!r}: use letters, digits, '_', '-', '.'")
    if o.triton_backend == "python" and o.format == "tensorrt":
        raise ExportError(
            "--format tensorrt needs --triton-backend onnxruntime (the python backend serves "
            "model.onnx with ONNX Runtime on CPU)"
        )
    if o.model is None and o.checkpoint is None:
        raise ExportError("--checkpoint is required")


def weights_fingerprint(model: Any) -> str:
    """sha256 over the model's parameters and buffers (names, shapes, float32 bytes, in name
    order): the weights part of the model identity an index records (server.core.identity)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        arr = t.detach().cpu().float().contiguous().numpy()
        h.update(f"{name}:{tuple(arr.shape)}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _load(o: BuildOptions) -> Any:
    if o.model is not None:
        return o.model.eval()
    assert o.checkpoint is not None
    p = Path(o.checkpoint)
    if not p.is_file():
        raise ExportError(
            f"checkpoint not found: {p} (pass a .safetensors file written by pemt.save)"
        )
    from pemt.model import load

    try:
        return load(p).eval()
    except Exception as e:
        msg = " ".join(str(e).split())
        raise ExportError(f"cannot load checkpoint {p}: {msg}") from e


def clip_inputs(cfg: ModelConfig, batch: int, workdir: Path) -> tuple[dict[str, np.ndarray], str]:
    """Model inputs from a real H.264/AAC clip encoded by FFmpeg (pemt.media), decoded with the
    serving path's own preprocessing. 1.6 windows long, so the second window has padding."""
    from pemt.media import batch_windows, load_windows
    from pemt.media.encode import make_test_video

    m = cfg.media
    seconds = round(1.6 * m.window_seconds, 2)
    path = make_test_video(
        workdir / "clip.mp4", seconds=seconds, width=192, height=144, fps=max(m.fps, 8)
    )
    windows = load_windows(path, m, stride_s=m.window_seconds if m.layout == "contiguous" else None)
    inputs = batch_windows(windows[:batch])
    return dict(inputs), f"{path.name}: {seconds} s H.264/AAC 192x144, {len(windows)} windows"


def build(o: BuildOptions, log: Callable[[str], None] = print) -> BuildReport:
    """Run the whole export; raise ExportError (one line) on any failure."""
    try:
        return _build(o, log)
    except ExportError:
        raise
    except Exception as e:  # an unexpected failure still gets one clear line
        msg = " ".join(str(e).split())[:400]
        raise ExportError(f"export failed: {type(e).__name__}: {msg}") from e


def _build(o: BuildOptions, log: Callable[[str], None]) -> BuildReport:
    import torch

    from pemt.model import fold

    t_start = time.perf_counter()
    _validate(o)
    trt_ok, trt_reason = tensorrt_status()
    if o.format == "tensorrt" and not trt_ok:
        raise ExportError(
            f"--format tensorrt needs TensorRT and a CUDA GPU, but {trt_reason}; use --format all "
            "(writes the onnxruntime config with the TensorRT execution accelerator) or onnx"
        )
    engine = trt_ok and o.format in ("tensorrt", "all") and o.triton_backend == "onnxruntime"
    report = BuildReport(o.name, o.layout, o.triton_backend)

    model = _load(o)
    cfg: ModelConfig = model.cfg
    torch.manual_seed(0)
    with torch.no_grad():
        folded = fold(model).eval()
    weights = weights_fingerprint(model)
    identity = {"pemt.weights": weights, "pemt.version": f"{cfg.name}-{weights[:12]}"}
    report.params_factored = sum(p.numel() for p in model.parameters())
    report.params_folded = sum(p.numel() for p in folded.parameters())
    if any(torch.nn.utils.parametrize.is_parametrized(m) for m in folded.modules()):
        raise ExportError("fold() left parametrizations in the model; export needs plain Linear")
    report.seconds["load+fold"] = time.perf_counter() - t_start

    ins, outs = spec.model_inputs(cfg), spec.model_outputs(cfg)
    out_names = [s.name for s in outs]
    # reference inputs: fresh random ones (all mask patterns) and a real decoded clip
    cases = {"random": random_inputs(ins, o.parity_batch, seed=1234)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pemt-export-") as tmp:
        if o.real_clip:
            try:
                cases["clip"], report.clip = clip_inputs(cfg, o.parity_batch, Path(tmp))
            except ImportError as e:  # pemt.media not there: say so, random only
                report.clip = f"skipped ({e})"
        else:
            report.clip = "skipped (disabled)"
    for arrays in cases.values():
        for s in ins:
            s.check(arrays[s.name])
    refs = {case: torch_run(SingleWrapper(model, cfg), x, out_names) for case, x in cases.items()}
    for case, x in cases.items():
        got = torch_run(SingleWrapper(folded, cfg), x, out_names)
        p = compare(f"fold parity ({case})", got, refs[case], atol=ATOL, rtol=RTOL)
        report.parities.append(p)
        log(p.line())
        if not p.ok:
            raise ExportError(f"folded model differs from the factored one: {p.line()}")
    report.seconds["reference"] = time.perf_counter() - t0

    out_root = Path(o.out)
    out_root.mkdir(parents=True, exist_ok=True)
    plan = plan_repository(cfg, o.name, o.layout, max_batch(o))
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out_root) as staging:
        stage = Path(staging)
        t0 = time.perf_counter()
        report.exporter = _export_all(folded, cfg, plan, stage, cases["random"], identity)
        report.seconds["onnx export"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        for case, x in cases.items():
            got = _ort_pipeline(plan, stage, x)
            p = compare(f"ORT vs PyTorch ({case})", got, refs[case], atol=ATOL, rtol=RTOL)
            report.parities.append(p)
            log(p.line())
            if not p.ok:
                raise ExportError(f"ONNX Runtime differs from PyTorch: {p.line()}")
        report.seconds["ORT parity"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if engine:
            report.tensorrt = _build_engines(plan, stage, o, cases, refs, report, log, trt_reason)
            report.seconds["TensorRT"] = time.perf_counter() - t0
        elif o.triton_backend == "python":
            report.tensorrt = "not used: python backend runs model.onnx with ONNX Runtime on CPU"
        elif o.format == "onnx":
            report.tensorrt = "not used (--format onnx): onnxruntime backend, no accelerator"
        else:
            report.tensorrt = (
                f"no engine built ({trt_reason}); config.pbtxt enables the onnxruntime backend's "
                f"TensorRT execution accelerator (precision_mode {o.precision.upper()}, engine cache)"
            )

        accel = o.format != "onnx"
        for entry in plan.entries:
            config = build_config(
                entry,
                backend=o.triton_backend,
                engine=engine,
                precision=o.precision if accel else "",
                instance_count=o.instances,
            )
            if not accel and o.triton_backend == "onnxruntime":
                config.optimization.Clear()
            if entry.name == plan.name:  # the model travels with its config (server reads it)
                config.parameters["pemt.config"].string_value = cfg.to_json()
                for key, value in identity.items():
                    config.parameters[key].string_value = value
            note = f"layout={o.layout} backend={o.triton_backend} precision={o.precision}"
            if engine and entry.kind == "compute":  # a plan is tied to the TensorRT that built it
                note += (
                    f"\nmodel.plan built with {trt_reason}: it loads only in a Triton container "
                    "with that TensorRT version (docs/ARCHITECTURE.md, TensorRT plans)"
                )
            write_config(config, stage / entry.name / "config.pbtxt", note)
            (stage / entry.name / "1").mkdir(parents=True, exist_ok=True)
            if o.triton_backend == "python" and entry.kind != "ensemble":
                (stage / entry.name / "1" / "model.py").write_text(PYTHON_MODEL_PY)

        problems = check_repository(stage, plan, backend=o.triton_backend, engine=engine)
        if problems:
            raise ExportError(
                f"model repository check failed: {problems[0]} (+{len(problems) - 1} more)"
            )

        try:  # all checks passed: each model becomes the next version of its folder
            report.versions = install_repository(stage, out_root, plan)
        except ValueError as e:
            raise ExportError(str(e)) from None
    for entry in plan.entries:  # what this export wrote (earlier versions stay as they were)
        model_dir = out_root / entry.name
        written = [model_dir / "config.pbtxt"]
        for sub in ("warmup", str(report.versions[entry.name])):
            written += sorted(f for f in (model_dir / sub).rglob("*") if f.is_file())
        for f in written:
            report.files[str(f.relative_to(out_root))] = f.stat().st_size
    report.seconds["total"] = time.perf_counter() - t_start
    return report


def _export_all(
    folded: Any,
    cfg: ModelConfig,
    plan: RepositoryPlan,
    stage: Path,
    example: dict[str, np.ndarray],
    identity: dict[str, str],
) -> str:
    """Write every model.onnx of the plan; returns the exporter used."""
    entries = {e.name: e for e in plan.entries}
    outs = [s.name for s in spec.model_outputs(cfg)]
    shapes = {s.name: s.shape for e in plan.entries for s in e.outputs}
    meta = {"pemt.config": cfg.to_json(), "pemt.layout": plan.layout, **identity}
    if plan.layout == "single":
        return export_onnx(
            SingleWrapper(folded, cfg),
            example,
            outs,
            stage / plan.name / "1" / "model.onnx",
            output_shapes=shapes,
            metadata=meta,
        )
    import torch

    t = cfg.media.num_segments
    b = next(iter(example.values())).shape[0]
    frames = example["frames"].reshape(b * t, *example["frames"].shape[2:])  # (B*T, F, S, S, 3)
    audio = example["audio"].reshape(b * t, *example["audio"].shape[2:])  # (B*T, M, A)
    with torch.inference_mode():
        vf = folded.encode_visual(torch.from_numpy(example["frames"])).numpy()  # (B, T, Dv)
        af = folded.encode_audio(torch.from_numpy(example["audio"])).numpy()  # (B, T, Da)
    used = {
        export_onnx(
            VisualCNNWrapper(folded),
            {"frames": frames},
            ["visual_features"],
            stage / spec.ENSEMBLE_VISUAL_CNN / "1" / "model.onnx",
            output_shapes=shapes,
            metadata=meta,
        ),
        export_onnx(
            AudioCNNWrapper(folded),
            {"audio": audio},
            ["audio_features"],
            stage / spec.ENSEMBLE_AUDIO_CNN / "1" / "model.onnx",
            output_shapes=shapes,
            metadata=meta,
        ),
        export_onnx(
            TransformerWrapper(folded, cfg),
            {
                "visual_features": vf,
                "audio_features": af,
                "visual_mask": example["visual_mask"],
                "audio_mask": example["audio_mask"],
            },
            outs,
            stage / spec.ENSEMBLE_TRANSFORMER / "1" / "model.onnx",
            output_shapes=shapes,
            metadata=meta,
        ),
    }
    for entry in entries.values():
        if entry.kind == "reshape":
            reshape_onnx(entry, stage / entry.name / "1" / "model.onnx")
    return "+".join(sorted(used))


def _ort_pipeline(
    plan: RepositoryPlan, stage: Path, x: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run the staged repository with ONNX Runtime the way Triton will (ensemble step by step)."""

    def sess(name: str) -> Any:
        return ort_session(stage / name / "1" / "model.onnx")

    if plan.layout == "single":
        return ort_run(sess(plan.name), x)
    ens = next(e for e in plan.entries if e.kind == "ensemble")
    tensors = dict(x)
    for step in ens.steps:
        feeds = {k: tensors[v] for k, v in step["input_map"].items()}
        res = ort_run(sess(step["model_name"]), feeds)
        tensors.update({v: res[k] for k, v in step["output_map"].items()})
    return {s.name: tensors[s.name] for s in ens.outputs}


def _build_engines(
    plan: RepositoryPlan,
    stage: Path,
    o: BuildOptions,
    cases: dict[str, dict[str, np.ndarray]],
    refs: dict[str, dict[str, np.ndarray]],
    report: BuildReport,
    log: Callable[[str], None],
    trt_reason: str,
) -> str:
    """One serialized engine per compute model (reshape models stay on ONNX Runtime)."""
    fp16 = o.precision == "fp16"
    for entry in plan.entries:
        if entry.kind != "compute":
            continue
        mb = entry.max_batch_size
        build_engine(
            stage / entry.name / "1" / "model.onnx",
            stage / entry.name / "1" / "model.plan",
            entry.inputs,
            max_batch=mb,
            opt_batch=max(1, mb // 2),
            fp16=fp16,
        )
    atol, rtol = (TRT_FP16_ATOL, TRT_FP16_RTOL) if fp16 else (1e-3, 1e-2)
    if plan.layout == "single":
        names = [s.name for s in plan.entries[0].outputs]
        for case, x in cases.items():
            got = run_engine(stage / plan.name / "1" / "model.plan", x, names)
            p = compare(f"TensorRT vs PyTorch ({case})", got, refs[case], atol=atol, rtol=rtol)
            report.parities.append(p)
            log(p.line())
            if not p.ok:
                raise ExportError(f"TensorRT engine differs from PyTorch: {p.line()}")
        checked = "parity checked"
    else:
        checked = "ensemble engines built; parity checked through ONNX Runtime only"
    mb = max_batch(o)
    return (
        f"engine built ({trt_reason}, {o.precision}, profile 1/{max(1, mb // 2)}/{mb}); {checked}"
    )
