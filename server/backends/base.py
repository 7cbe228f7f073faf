"""The backend interface: one exported model behind ``embed(inputs) -> outputs``.

Inputs and outputs are named, typed and shaped per :mod:`pemt.spec`; the batch axis comes first
and may be split into chunks of ``max_batch``.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np

from pemt.config import ModelConfig
from pemt.spec import TensorSpec, model_inputs, model_outputs

__all__ = ["Backend", "BackendError", "check_inputs", "chunks", "concat_outputs"]


class BackendError(RuntimeError):
    """The model could not be loaded or run; the message says what to fix."""


class Backend(abc.ABC):
    """An exported PEMT model. Build with a classmethod ``create(...)``; close when done."""

    name: str
    cfg: ModelConfig
    max_batch: int
    # what the exported model says about itself (ONNX metadata / config.pbtxt parameters:
    # pemt.config, pemt.weights, pemt.version) and its file when local (server.core.identity)
    model_meta: dict[str, str] = {}
    model_file: Path | None = None

    @abc.abstractmethod
    async def embed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a batch (any size; split into chunks of ``max_batch``)."""

    @abc.abstractmethod
    def ready(self) -> bool: ...

    @abc.abstractmethod
    def info(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    def input_specs(self) -> list[TensorSpec]:
        return model_inputs(self.cfg)

    @property
    def output_specs(self) -> list[TensorSpec]:
        return model_outputs(self.cfg)


def check_inputs(cfg: ModelConfig, inputs: dict[str, np.ndarray]) -> int:
    """Validate ``inputs`` against pemt.spec; returns the batch size."""
    specs = model_inputs(cfg)
    want = {s.name for s in specs}
    if set(inputs) != want:
        raise ValueError(f"model inputs are {sorted(want)}, got {sorted(inputs)}")
    sizes = {inputs[s.name].shape[0] if inputs[s.name].ndim else -1 for s in specs}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(f"all inputs need the same leading batch axis, got sizes {sorted(sizes)}")
    for s in specs:
        s.check(inputs[s.name])
    return sizes.pop()


def chunks(inputs: dict[str, np.ndarray], n: int, size: int) -> list[dict[str, np.ndarray]]:
    return [{k: v[i : i + size] for k, v in inputs.items()} for i in range(0, n, size)]


def concat_outputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
