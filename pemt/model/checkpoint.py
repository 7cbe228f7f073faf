"""Checkpoints: one ``.safetensors`` file that describes itself, and parameter counts.

The file holds the ``state_dict`` tensors and, in its metadata, the config that built the model
(``"pemt.config"``: ``ModelConfig.to_json()``) and whether the projections were folded
(``"pemt.folded"``). Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pemt.config import ModelConfig
from pemt.model.pemt import PEMT

__all__ = ["CHECKPOINT_NAME", "count_parameters", "load", "save"]

CHECKPOINT_NAME = "model.safetensors"  # the file inside a checkpoint directory
_FORMAT = "2"  # 2: AVBERT's computation (format 1 was PEMT 0.1's one-second-segment model)


def _resolve(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def save(model: PEMT, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` (a file, or a directory that gets ``model.safetensors``)."""
    if not isinstance(model, PEMT):
        raise TypeError(f"save needs a PEMT model, got {type(model).__name__}")
    p = _resolve(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "pemt.config": model.cfg.to_json(),
        "pemt.folded": "true" if model.folded else "false",
        "pemt.format": _FORMAT,
    }
    tmp = p.with_name(p.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, p)  # readers never see a half-written checkpoint


def _fail(p: Path, problem: str) -> ValueError:
    return ValueError(f"checkpoint {p}: {problem}")


def _names(keys: list[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load(path: str | os.PathLike[str]) -> PEMT:
    """Rebuild the model saved by :func:`save` (a file, or a directory with
    ``model.safetensors``), in eval mode on the CPU. Raises ``ValueError`` naming the problem for
    a file that is not safetensors, lacks the config, or whose keys or shapes do not match."""
    p = _resolve(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {p} (expected a .safetensors file or a directory with {CHECKPOINT_NAME})"
        )
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises its own error types for garbage and truncation
        raise _fail(p, f"not a readable safetensors file ({type(e).__name__}: {e})") from e
    if "pemt.config" not in metadata:
        raise _fail(p, "no 'pemt.config' in its metadata; write checkpoints with pemt.save")
    if metadata.get("pemt.format", _FORMAT) != _FORMAT:
        raise _fail(
            p,
            f"written in checkpoint format {metadata.get('pemt.format')} by an older PEMT whose "
            f"model differs from AVBERT's (this PEMT reads format {_FORMAT}); retrain it with "
            "`pemt train` or import AVBERT's weights with `pemt import avbert`",
        )
    try:
        cfg = ModelConfig.from_dict(json.loads(metadata["pemt.config"]))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise _fail(p, f"bad 'pemt.config' metadata: {e}") from e

    with torch.device("meta"):  # no random init, no second copy of the weights
        model = PEMT(cfg)
        if metadata.get("pemt.folded") == "true":
            model.transformers.fold_()
            model.folded = True
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _fail(
            p,
            f"keys do not match config {cfg.name!r} (sharing={cfg.sharing!r}): "
            f"missing keys [{_names(missing)}], unexpected keys [{_names(unexpected)}]",
        )
    bad = [
        f"{k}: {tuple(v.shape)} in file, {tuple(expected[k].shape)} expected"
        for k, v in tensors.items()
        if v.shape != expected[k].shape
    ]
    if bad:
        raise _fail(p, f"shape mismatch: {_names(bad)}")
    for k, v in tensors.items():
        if v.dtype != expected[k].dtype:
            tensors[k] = v.to(expected[k].dtype)
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per component: visual_cnn, audio_cnn, projections (feature -> hidden, with
    their LayerNorms), embeddings (start tokens, positions, token types, their LayerNorms),
    transformers, total. Shared weights count once.
    Works on a model built on the meta device."""
    groups = {"visual_cnn": 0, "audio_cnn": 0, "projections": 0, "embeddings": 0, "transformers": 0}
    top = {
        "visual_fc": "projections",
        "visual_norm": "projections",
        "audio_fc": "projections",
        "audio_norm": "projections",
        "start": "embeddings",
        "visual_embed": "embeddings",
        "audio_embed": "embeddings",
        "multi_embed": "embeddings",
    }
    for name, param in model.named_parameters():  # deduplicates shared parameters
        head = name.split(".", 1)[0]
        group = top.get(head, head)
        if group not in groups:
            raise ValueError(f"parameter {name!r} belongs to no known component")
        groups[group] += param.numel()
    groups["total"] = sum(groups.values())
    return groups
