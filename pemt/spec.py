"""Tensor names, dtypes and shapes of the exported model: the one definition.

The ONNX graph (export), every ``config.pbtxt`` (model_repository), the server's backends and the
clients are all checked against these functions, and all through one function,
:func:`check_served`. Shapes exclude the batch axis (Triton's ``max_batch_size > 0``
convention); ``-1`` is a dynamic axis. :func:`triton_request` builds the Triton request for a
batch (the server's Triton backend and ``clients.triton_client`` both send through it).
Torch-free; imports no Triton client (the caller passes its ``tritonclient`` module).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pemt.config import MediaConfig, ModelConfig

__all__ = [
    "ENSEMBLE_AUDIO_CNN",
    "ENSEMBLE_TRANSFORMER",
    "ENSEMBLE_VISUAL_CNN",
    "Served",
    "TensorSpec",
    "audio_cnn_inputs",
    "audio_cnn_outputs",
    "check_served",
    "dtype_name",
    "model_inputs",
    "model_outputs",
    "transformer_inputs",
    "triton_request",
    "visual_cnn_inputs",
    "visual_cnn_outputs",
    "window_inputs",
]

# numpy dtype name -> Triton config dtype
_TRITON = {
    "uint8": "TYPE_UINT8",
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bool": "TYPE_BOOL",
}
# numpy dtype name -> tritonclient datatype string
_WIRE = {"uint8": "UINT8", "float32": "FP32", "float16": "FP16", "bool": "BOOL"}
# numpy dtype name -> ONNX Runtime's NodeArg.type
_ORT = {"uint8": "tensor(uint8)", "float32": "tensor(float)", "float16": "tensor(float16)",
        "bool": "tensor(bool)"}  # fmt: skip
# every spelling a served model uses for a dtype -> the numpy name
_DTYPE_NAMES = {
    spelling: name for table in (_TRITON, _WIRE, _ORT) for name, spelling in table.items()
}

ENSEMBLE_VISUAL_CNN = "visual_cnn"
ENSEMBLE_AUDIO_CNN = "audio_cnn"
ENSEMBLE_TRANSFORMER = "transformer"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int, ...]  # without the batch axis

    @property
    def triton_dtype(self) -> str:
        return _TRITON[self.dtype]

    @property
    def wire_dtype(self) -> str:
        return _WIRE[self.dtype]

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def check(self, array: np.ndarray, batched: bool = True) -> None:
        """Raise ValueError unless ``array`` matches this spec (with a leading batch axis)."""
        shape = array.shape[1:] if batched else array.shape
        if array.dtype != self.np_dtype:
            raise ValueError(f"{self.name}: dtype {array.dtype}, expected {self.dtype}")
        if len(shape) != len(self.shape) or any(
            want != -1 and got != want for got, want in zip(shape, self.shape, strict=True)
        ):
            raise ValueError(f"{self.name}: shape {tuple(shape)}, expected (batch, *{self.shape})")


def model_inputs(cfg: ModelConfig) -> list[TensorSpec]:
    """Inputs of the whole model: one window per batch row (:func:`window_inputs` of its media)."""
    return window_inputs(cfg.media)


def window_inputs(media: MediaConfig) -> list[TensorSpec]:
    """One window of ``media.num_segments`` segments, as ``pemt.media`` decodes it.

    frames: uint8 RGB, channels last, as decoded (normalization happens inside the graph).
    audio: float32 log-mel per segment, from pemt.media.log_mel.
    visual_mask / audio_mask: True where the segment holds real data (padding and a missing
    modality are False).
    """
    m = media
    t, f, s = m.num_segments, m.frames_per_segment, m.image_size
    return [
        TensorSpec("frames", "uint8", (t, f, s, s, 3)),
        TensorSpec("audio", "float32", (t, m.n_mels, m.audio_frames_per_segment)),
        TensorSpec("visual_mask", "bool", (t,)),
        TensorSpec("audio_mask", "bool", (t,)),
    ]


def model_outputs(cfg: ModelConfig) -> list[TensorSpec]:
    """Outputs: L2-normalized clip embeddings and per-segment tokens (not normalized)."""
    t, d = cfg.media.num_segments, cfg.embed_dim
    return [
        TensorSpec("embedding", "float32", (d,)),  # multimodal BOS token: the retrieval vector
        TensorSpec("audio_embedding", "float32", (d,)),  # audio transformer BOS token
        TensorSpec("visual_embedding", "float32", (d,)),  # visual transformer BOS token
        TensorSpec("audio_tokens", "float32", (t, d)),
        TensorSpec("visual_tokens", "float32", (t, d)),
        TensorSpec("fused_tokens", "float32", (t, d)),  # mean of a segment's two multimodal tokens
    ]


# --- ensemble layout: CNNs batch per segment, the transformer per window -------------------


def visual_cnn_inputs(cfg: ModelConfig) -> list[TensorSpec]:
    m = cfg.media
    return [TensorSpec("frames", "uint8", (m.frames_per_segment, m.image_size, m.image_size, 3))]


def visual_cnn_outputs(cfg: ModelConfig) -> list[TensorSpec]:
    return [TensorSpec("visual_features", "float32", (cfg.visual_dim,))]


def audio_cnn_inputs(cfg: ModelConfig) -> list[TensorSpec]:
    m = cfg.media
    return [TensorSpec("audio", "float32", (m.n_mels, m.audio_frames_per_segment))]


def audio_cnn_outputs(cfg: ModelConfig) -> list[TensorSpec]:
    return [TensorSpec("audio_features", "float32", (cfg.audio_dim,))]


def transformer_inputs(cfg: ModelConfig) -> list[TensorSpec]:
    t = cfg.media.num_segments
    return [
        TensorSpec("visual_features", "float32", (t, cfg.visual_dim)),
        TensorSpec("audio_features", "float32", (t, cfg.audio_dim)),
        TensorSpec("visual_mask", "bool", (t,)),
        TensorSpec("audio_mask", "bool", (t,)),
    ]


# --- checking a served model against the spec ------------------------------------------------

# One served tensor as a server reports it: (name, dtype in any spelling, shape). Shape entries
# are ints or digit strings, with -1, None or a name (ONNX's symbolic dims) for a dynamic axis.
Served = tuple[str, str, Sequence[int | str | None]]


def dtype_name(spelling: str) -> str:
    """The numpy dtype name for a Triton config type (``TYPE_FP32``), a Triton wire type
    (``FP32``), an ONNX Runtime type (``tensor(float)``) or a numpy name; unknown spellings are
    returned as given (so that a mismatch message shows them)."""
    return _DTYPE_NAMES.get(spelling, spelling)


def _dim(d: int | str | None) -> int:
    """A served dim as an int, -1 when dynamic. Triton's JSON metadata writes int64 dims as
    strings ("-1", "16"); ONNX Runtime names symbolic dims ("batch") or leaves them None."""
    if isinstance(d, str):
        try:
            d = int(d)
        except ValueError:
            return -1
    return d if d is not None and d >= 0 else -1


def _show(shape: Sequence[int], batch_axis: bool) -> str:
    dims = ["batch", *map(str, shape)] if batch_axis else [str(d) for d in shape]
    return f"({', '.join(dims)})"


def _check_group(
    kind: str, want: Sequence[TensorSpec], got: Sequence[Served], batch_axis: bool, exact: bool
) -> list[str]:
    problems: list[str] = []
    names = [g[0] for g in got]
    wanted = [w.name for w in want]
    if exact and names != wanted and sorted(names) == sorted(wanted):
        problems.append(f"{kind}s are {names}, pemt.spec says {wanted} in this order")
    served = {g[0]: g for g in got}
    for w in want:
        if w.name not in served:
            problems.append(f"{kind} {w.name!r} missing (served: {names})")
            continue
        _, spelling, shape = served[w.name]
        if dtype_name(spelling) != w.dtype:
            problems.append(f"{kind} {w.name}: dtype {spelling}, pemt.spec says {w.dtype}")
        dims = [_dim(d) for d in shape]
        if batch_axis:
            if dims and dims[0] != -1:
                problems.append(
                    f"{kind} {w.name}: batch axis fixed at {dims[0]}, pemt.spec needs a dynamic "
                    "one; export with a dynamic batch axis"
                )
            dims = dims[1:]
        fits = len(dims) == len(w.shape) and all(
            g == v or (not exact and -1 in (g, v)) for g, v in zip(dims, w.shape, strict=True)
        )
        if not fits:
            problems.append(
                f"{kind} {w.name}: shape {list(shape)}, pemt.spec says {_show(w.shape, batch_axis)}"
            )
    extra = [n for n in names if n not in set(wanted)]
    if extra and (exact or kind == "input"):
        problems.append(f"{kind}s {extra} are not in pemt.spec (it has {wanted})")
    return problems


def check_served(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    served_inputs: Iterable[Served],
    served_outputs: Iterable[Served],
    *,
    batch_axis: bool,
    exact: bool = False,
) -> list[str]:
    """Every way a served model can disagree with the spec, as one line each (empty: it agrees).

    This is the one check of a served model: the ONNX Runtime session (server's ONNX backend),
    Triton's model metadata (server's Triton backend, ``clients.triton_client``), and the written
    ``config.pbtxt`` and ONNX graph (export) all go through it.

    ``batch_axis``: the served shapes start with the batch axis (ONNX graphs, Triton metadata of a
    model with ``max_batch_size > 0``), which must be dynamic; ``config.pbtxt`` dims leave it out.
    Names, dtypes and the other dims must match. Not ``exact`` (serving): a dynamic dim on either
    side matches any size, served outputs beyond the spec are ignored, served inputs beyond it
    are not (requests would lack them). ``exact`` (export, the artifacts we write): names in the
    spec's order, dims equal (dynamic only where the spec says -1), nothing extra.
    """
    return _check_group("input", inputs, list(served_inputs), batch_axis, exact) + _check_group(
        "output", outputs, list(served_outputs), batch_axis, exact
    )


def triton_request(
    module: Any,
    inputs: Sequence[TensorSpec],
    arrays: Mapping[str, np.ndarray],
    outputs: Sequence[TensorSpec],
) -> tuple[list[Any], list[Any]]:
    """The ``InferInput`` list (in spec order, data from ``arrays``, C-contiguous) and the
    ``InferRequestedOutput`` list for one Triton request. ``module`` is ``tritonclient.grpc``,
    ``tritonclient.grpc.aio`` or ``tritonclient.http`` (they share these classes' signatures).
    Raises ValueError when an array does not match its spec (dtype or shape; batch first)."""
    infer_inputs = []
    for spec in inputs:
        if spec.name not in arrays:
            raise ValueError(f"missing input {spec.name!r}; inputs are {[s.name for s in inputs]}")
        array = np.ascontiguousarray(arrays[spec.name])
        spec.check(array)
        t = module.InferInput(spec.name, list(array.shape), spec.wire_dtype)
        t.set_data_from_numpy(array)
        infer_inputs.append(t)
    return infer_inputs, [module.InferRequestedOutput(spec.name) for spec in outputs]
