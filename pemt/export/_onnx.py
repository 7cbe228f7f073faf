"""Export wrappers, ONNX export and parity checks (PyTorch vs ONNX Runtime).

Every wrapper takes exactly the tensors of one ``pemt.spec`` input list, in order, and returns a
tuple in the order of the matching output list, so graph names come from the spec and nowhere
else. The batch axis (axis 0) is the only dynamic axis.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pemt import spec
from pemt.config import ModelConfig

__all__ = [
    "OPSET",
    "AudioCNNWrapper",
    "Parity",
    "SingleWrapper",
    "TransformerWrapper",
    "VisualCNNWrapper",
    "compare",
    "export_onnx",
    "onnx_io",
    "ort_run",
    "ort_session",
    "random_inputs",
    "torch_run",
]

OPSET = 17
_ONNX_ELEM = {1: "float32", 2: "uint8", 9: "bool", 10: "float16"}  # onnx.TensorProto enum


class SingleWrapper(nn.Module):
    """(frames, audio, visual_mask, audio_mask) -> spec.model_outputs, as a tuple."""

    def __init__(self, model: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.model = model
        self.names = [s.name for s in spec.model_outputs(cfg)]

    def forward(self, frames, audio, visual_mask, audio_mask):  # type: ignore[no-untyped-def]
        out = self.model(frames, audio, visual_mask, audio_mask)
        return tuple(out[n] for n in self.names)


class VisualCNNWrapper(nn.Module):
    """Per segment: frames uint8 (N, F, S, S, 3) -> visual_features (N, visual_dim)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames):  # type: ignore[no-untyped-def]
        return self.model.encode_visual(frames.unsqueeze(1)).squeeze(1)  # (N, 1, ...) -> (N, Dv)


class AudioCNNWrapper(nn.Module):
    """Per segment: audio (N, M, A) -> audio_features (N, audio_dim)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio):  # type: ignore[no-untyped-def]
        return self.model.encode_audio(audio.unsqueeze(1)).squeeze(1)  # (N, 1, M, A) -> (N, Da)


class TransformerWrapper(nn.Module):
    """Per window: (visual_features (B,T,Dv), audio_features (B,T,Da), masks) -> spec outputs."""

    def __init__(self, model: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.model = model
        self.names = [s.name for s in spec.model_outputs(cfg)]

    def forward(self, visual_features, audio_features, visual_mask, audio_mask):  # type: ignore[no-untyped-def]
        out = self.model.forward_features(visual_features, audio_features, visual_mask, audio_mask)
        return tuple(out[n] for n in self.names)


def random_inputs(
    specs: Sequence[spec.TensorSpec], batch: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random arrays for ``specs``. Masks cover the interesting cases row by row: all real,
    trailing padding, a missing modality (audio_mask all False on row 2 mod 3)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for s in specs:
        shape = (batch, *s.shape)
        if s.dtype == "uint8":
            out[s.name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif s.dtype == "bool":
            m = np.ones(shape, dtype=bool)
            t = shape[-1]
            for b in range(batch):
                if b % 3 == 1:
                    m[b, max(1, t // 2) :] = False
                if b % 3 == 2 and s.name == "audio_mask":
                    m[b, :] = False
            out[s.name] = m
        else:
            out[s.name] = rng.standard_normal(shape).astype(s.dtype)
    return out


def torch_run(
    module: nn.Module, inputs: dict[str, np.ndarray], names: Sequence[str]
) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        outs = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()))
    if isinstance(outs, torch.Tensor):
        outs = (outs,)
    return {n: o.float().numpy() for n, o in zip(names, outs, strict=True)}


def export_onnx(
    module: nn.Module,
    example: dict[str, np.ndarray],
    output_names: Sequence[str],
    path: Path,
    *,
    output_shapes: dict[str, tuple[int, ...]] | None = None,
    metadata: dict[str, str] | None = None,
    opset: int = OPSET,
) -> str:
    """Export with a dynamic batch axis; returns which exporter worked.

    The TorchScript exporter (``dynamo=False``) handles a dynamic batch axis with bool masks
    robustly; the dynamo exporter is the fallback if tracing fails. The TorchScript exporter
    leaves every output axis symbolic; ``output_shapes`` (without the batch axis, from
    pemt.spec) are stamped on the graph outputs, and the parity checks then verify that the
    arrays ONNX Runtime returns have exactly those shapes. ``metadata`` goes into the model's
    ``metadata_props`` (the server reads ``pemt.config`` from there).
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in example.values())
    in_names = list(example)
    dyn = {n: {0: "batch"} for n in [*in_names, *output_names]}
    module.eval()
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if dynamo:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    torch.onnx.export(
                        module,
                        args,
                        str(path),
                        input_names=in_names,
                        output_names=list(output_names),
                        dynamic_shapes={n: {0: batch} for n in in_names},
                        opset_version=max(opset, 18),
                        dynamo=True,
                        external_data=False,
                    )
                else:
                    torch.onnx.export(
                        module,
                        args,
                        str(path),
                        input_names=in_names,
                        output_names=list(output_names),
                        dynamic_axes=dyn,
                        opset_version=opset,
                        dynamo=False,
                        do_constant_folding=True,
                    )
            _stamp(path, output_shapes or {}, metadata or {})
            onnx.checker.check_model(str(path), full_check=True)
            return "dynamo" if dynamo else "torchscript"
        except Exception as e:  # noqa: BLE001 - try the other exporter, report both on failure
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {e}")
    raise RuntimeError("ONNX export failed with both exporters: " + " | ".join(errors))


def _stamp(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    for out in model.graph.output:
        if out.name not in shapes:
            continue
        dims = out.type.tensor_type.shape.dim
        want = shapes[out.name]
        del dims[:]
        dims.add().dim_param = "batch"
        for v in want:
            dims.add().dim_value = v
    onnx.save(model, str(path))


def onnx_io(path: Path) -> tuple[list[spec.TensorSpec], list[spec.TensorSpec]]:
    """Graph inputs/outputs as TensorSpecs; shapes include the batch axis, -1 = symbolic."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def conv(vi: Any) -> spec.TensorSpec:
        t = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return spec.TensorSpec(vi.name, _ONNX_ELEM.get(t.elem_type, f"onnx:{t.elem_type}"), dims)

    init = {i.name for i in model.graph.initializer}
    ins = [conv(v) for v in model.graph.input if v.name not in init]
    return ins, [conv(v) for v in model.graph.output]


def ort_session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_run(session: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


@dataclass
class Parity:
    """Largest differences between two sets of outputs (``ref`` is the reference)."""

    what: str
    max_abs: float
    max_rel: float  # max |a - ref| / max |ref|, per output, then the largest
    worst: str  # the output with the largest abs error
    ok: bool
    atol: float
    rtol: float

    def line(self) -> str:
        return (
            f"{self.what}: max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e} "
            f"(worst {self.worst}; tol atol={self.atol:g} rtol={self.rtol:g}) "
            f"{'ok' if self.ok else 'FAIL'}"
        )


def compare(
    what: str,
    got: dict[str, np.ndarray],
    ref: dict[str, np.ndarray],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> Parity:
    max_abs, max_rel, worst, ok = 0.0, 0.0, "", True
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape:
            return Parity(
                what,
                float("inf"),
                float("inf"),
                f"{name} shape {g.shape} != {r.shape}",
                False,
                atol,
                rtol,
            )
        if not np.isfinite(g).all() or not np.isfinite(r).all():
            return Parity(what, float("inf"), float("inf"), f"{name} not finite", False, atol, rtol)
        err = np.abs(g.astype(np.float64) - r.astype(np.float64))
        a = float(err.max()) if err.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
        rel = a / scale if scale > 0 else a
        ok = ok and bool(np.all(err <= atol + rtol * np.abs(r)))
        if a >= max_abs:
            max_abs, worst = a, name
        max_rel = max(max_rel, rel)
    return Parity(what, max_abs, max_rel, worst, ok, atol, rtol)


def timed(fn: Callable[[], Any], iters: int, warmup: int = 1) -> float:
    """Median milliseconds of ``fn`` over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
