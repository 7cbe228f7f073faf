#!/usr/bin/env python
"""Build the Triton model repository from a PEMT checkpoint.

    python export/build_engine.py --checkpoint runs/tiny/model.safetensors
    python export/build_engine.py --checkpoint CKPT --layout ensemble --triton-backend python

Folds the factored projections (checks folded == factored), exports ONNX with a dynamic batch
axis (checks ONNX Runtime == PyTorch on random inputs and on a real decoded clip), builds a
TensorRT engine when TensorRT and a GPU are present (otherwise configures the onnxruntime
backend's TensorRT accelerator and says so), writes ``<out>/<name>/config.pbtxt`` +
``1/model.onnx``, parses every config back into Triton's ModelConfig and checks it against the
ONNX graph and ``pemt.spec``. Prints a summary table; exits 1 with one line on any failure.
The library behind it is ``pemt.export``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import pemt  # noqa: F401  (installed, or editable)
except ImportError:  # run from a checkout without installing: add the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="build_engine.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="a .safetensors from pemt.save")
    p.add_argument("--out", type=Path, default=Path("model_repository"), help="repository root")
    p.add_argument("--name", default="pemt", help="model name the clients call (default: pemt)")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16"],
        default="fp32",
        help="TensorRT precision (engine, or the accelerator's precision_mode); ONNX I/O stays fp32",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        help="max windows per Triton batch (default: 32 for the onnxruntime backend on a GPU, "
        "where batch 32 measured 3.7x the clips/s of batch 1; 8 for the CPU python backend); "
        "dynamic batching prefers max/4, max/2 and max",
    )
    p.add_argument(
        "--instances", type=int, default=1, help="model instances per GPU (CPU) (default: 1)"
    )
    p.add_argument(
        "--format",
        choices=["onnx", "tensorrt", "all"],
        default="all",
        help="onnx: ONNX only; tensorrt: require an engine; all: engine when TensorRT+GPU exist",
    )
    p.add_argument("--layout", choices=["single", "ensemble"], default="single")
    p.add_argument(
        "--triton-backend",
        choices=["onnxruntime", "python"],
        default="onnxruntime",
        help="onnxruntime: NVIDIA's Triton container (GPU); python: model.py running ONNX "
        "Runtime on CPU (e.g. the Triton inside nvidia-pytriton)",
    )
    p.add_argument("--parity-batch", type=int, default=3, help="rows per parity check")
    p.add_argument("--no-clip", action="store_true", help="skip the real-clip parity check")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pemt.export import BuildOptions, ExportError, build

    opts = BuildOptions(
        checkpoint=args.checkpoint,
        out=args.out,
        name=args.name,
        precision=args.precision,
        max_batch=args.max_batch,
        instances=args.instances,
        format=args.format,
        layout=args.layout,
        triton_backend=args.triton_backend,
        parity_batch=args.parity_batch,
        real_clip=not args.no_clip,
    )
    try:
        report = build(opts)
    except ExportError as e:
        print(f"build_engine: error: {e}", file=sys.stderr)
        return 1
    print(report.table())
    print(
        f"wrote {args.out}/{args.name} ({args.layout}); serve with Triton: --load-model={args.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
