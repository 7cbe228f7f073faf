"""Serialized TensorRT engines, when the ``tensorrt`` package and a CUDA GPU are both present.

Without them the repository uses Triton's onnxruntime backend with the TensorRT execution
accelerator (see ``_triton.build_config``), which builds the engine inside Triton on first load.
TensorRT 10 API (explicit batch networks, ``set_input_shape``/``execute_async_v3``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pemt import spec

__all__ = ["build_engine", "run_engine", "tensorrt_status"]


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason): both ``import tensorrt`` and a CUDA device are needed."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "the tensorrt package is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"tensorrt {trt.__version__} is installed but no CUDA GPU is visible"
    return True, f"tensorrt {trt.__version__} on {torch.cuda.get_device_name(0)}"


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    inputs: Sequence[spec.TensorSpec],
    *,
    max_batch: int,
    opt_batch: int,
    fp16: bool,
    workspace_bytes: int = 4 << 30,
) -> None:
    """ONNX -> serialized engine with one optimization profile over the batch axis."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for s in inputs:
        profile.set_shape(s.name, (1, *s.shape), (opt_batch, *s.shape), (max_batch, *s.shape))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT engine build failed for {onnx_path}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(plan))


def run_engine(
    plan_path: Path, inputs: dict[str, np.ndarray], output_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Run a serialized engine once on the current CUDA device (for parity checks)."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
    ctx = engine.create_execution_context()
    keep = []
    for name, arr in inputs.items():
        t = torch.from_numpy(np.ascontiguousarray(arr)).cuda()
        keep.append(t)
        ctx.set_input_shape(name, tuple(arr.shape))
        ctx.set_tensor_address(name, t.data_ptr())
    outs = {}
    for name in output_names:
        shape = tuple(ctx.get_tensor_shape(name))
        t = torch.empty(shape, dtype=torch.float32, device="cuda")
        outs[name] = t
        ctx.set_tensor_address(name, t.data_ptr())
    stream = torch.cuda.current_stream()
    if not ctx.execute_async_v3(stream.cuda_stream):
        raise RuntimeError(f"TensorRT execution failed for {plan_path}")
    stream.synchronize()
    return {n: t.cpu().numpy() for n, t in outs.items()}
