"""Tensor names, dtypes and shapes of the exported model: the one definition.

The ONNX graph (export), every ``config.pbtxt`` (model_repository), the server's backends and the
clients are all checked against these functions. Shapes exclude the batch axis (Triton's
``max_batch_size > 0`` convention); ``-1`` is a dynamic axis. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pemt.config import ModelConfig

__all__ = [
    "ENSEMBLE_AUDIO_CNN",
    "ENSEMBLE_TRANSFORMER",
    "ENSEMBLE_VISUAL_CNN",
    "TensorSpec",
    "audio_cnn_inputs",
    "audio_cnn_outputs",
    "model_inputs",
    "model_outputs",
    "transformer_inputs",
    "visual_cnn_inputs",
    "visual_cnn_outputs",
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
    """Inputs of the whole model: one 30-s window per batch row.

    frames: uint8 RGB, channels last, as decoded (normalization happens inside the graph).
    audio: float32 log-mel per segment, from pemt.media.log_mel.
    visual_mask / audio_mask: True where the segment holds real data (padding and a missing
    modality are False).
    """
    m = cfg.media
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
