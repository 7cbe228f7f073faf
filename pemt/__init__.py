"""PEMT: parameter-efficient multimodal transformers for audio-visual video embeddings.

Importing ``pemt`` does not import torch; ``pemt.load`` imports the model code on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pemt.config import MediaConfig, ModelConfig, available_configs, get_config, load_config

if TYPE_CHECKING:
    from pemt.model import PEMT

__all__ = [
    "MediaConfig",
    "ModelConfig",
    "available_configs",
    "get_config",
    "load",
    "load_config",
    "save",
]
__version__ = "0.1.0"


def load(path: Any) -> PEMT:
    """Rebuild a model from a checkpoint written by :func:`save` (safetensors + its config)."""
    from pemt.model import load as _load

    return _load(path)


def save(model: PEMT, path: Any) -> None:
    """Write ``model`` as one safetensors file with the config that built it in its metadata."""
    from pemt.model import save as _save

    _save(model, path)
