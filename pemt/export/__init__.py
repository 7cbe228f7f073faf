"""Export: checkpoint -> fold -> ONNX -> (TensorRT) -> Triton model repository (imports torch).

``export/build_engine.py`` is the command line; ``build(BuildOptions(...))`` is the library call.
See ``pemt.export._triton`` for the repository layouts (single model, or an ensemble of per-segment
CNNs and a per-window transformer).
"""

from __future__ import annotations

from pemt.export._build import BuildOptions, BuildReport, ExportError, build, clip_inputs
from pemt.export._onnx import (
    OPSET,
    Parity,
    compare,
    export_onnx,
    onnx_io,
    ort_run,
    ort_session,
    random_inputs,
)
from pemt.export._triton import (
    RESHAPE_TO_SEGMENTS,
    RESHAPE_TO_WINDOWS,
    check_repository,
    parse_config,
    plan_repository,
)

__all__ = [
    "OPSET",
    "RESHAPE_TO_SEGMENTS",
    "RESHAPE_TO_WINDOWS",
    "BuildOptions",
    "BuildReport",
    "ExportError",
    "Parity",
    "build",
    "check_repository",
    "clip_inputs",
    "compare",
    "export_onnx",
    "onnx_io",
    "ort_run",
    "ort_session",
    "parse_config",
    "plan_repository",
    "random_inputs",
]
