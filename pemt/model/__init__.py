"""The PEMT model: CNNs, the shared transformers, folding, checkpoints (imports torch)."""

from __future__ import annotations

from pemt.model.checkpoint import count_parameters, load, save
from pemt.model.pemt import PEMT, build_model, fold

__all__ = ["PEMT", "build_model", "count_parameters", "fold", "load", "save"]
