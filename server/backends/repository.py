"""Find an exported model on disk and the ModelConfig it was built with.

Layout written by ``export/build_engine.py`` (Triton model repository)::

    model_repository/<name>/config.pbtxt
    model_repository/<name>/<version>/model.onnx    (1, 2, ...: each export adds one)

The newest version is used, as Triton's ``version_policy { latest { num_versions: 1 } }`` does.

The model's config travels with it: the ONNX metadata key ``pemt.config``, a JSON file next to
it, or a ``pemt.config`` parameter in config.pbtxt. ``fallback`` (a variant name) is used only
when none of these exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pemt.config import ModelConfig, load_config
from server.backends.base import BackendError

__all__ = ["find_onnx", "read_pbtxt", "resolve_config"]

CONFIG_KEYS = ("pemt.config", "pemt_config", "config")
CONFIG_FILES = ("pemt_config.json", "pemt.config.json", "model_config.json", "config.json")


def _newest_version(model_dir: Path) -> Path | None:
    """``model_dir/<n>/model.onnx`` for the highest version n that has one."""
    if not model_dir.is_dir():
        return None
    versions = sorted(
        (int(v.name) for v in model_dir.iterdir() if v.is_dir() and v.name.isdigit()),
        reverse=True,
    )
    for v in versions:
        if v > 0 and (model_dir / str(v) / "model.onnx").is_file():
            return model_dir / str(v) / "model.onnx"
    return None


def find_onnx(model_path: Path, model_name: str) -> Path:
    """``model_path`` is a repository, one model's folder in it, or the model.onnx itself."""
    p = Path(model_path)
    if p.is_file():
        if p.suffix != ".onnx":
            raise BackendError(f"PEMT_MODEL_PATH={p} is a file but not an .onnx model")
        return p
    for found in (_newest_version(p / model_name), _newest_version(p), p / "model.onnx"):
        if found is not None and found.is_file():
            return found
    looked = [p / model_name / "<version>" / "model.onnx", p / "<version>" / "model.onnx"]
    raise BackendError(
        f"no model.onnx under PEMT_MODEL_PATH={p} (looked for "
        f"{', '.join(map(str, [*looked, p / 'model.onnx']))}); export one with "
        "`python export/build_engine.py` or point PEMT_MODEL_PATH at a model.onnx"
    )


def read_pbtxt(model_dir: Path) -> Any | None:
    """The parsed config.pbtxt of a model folder (tritonclient's ModelConfig proto), or None."""
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        return None
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise BackendError(f"{path} does not parse as a Triton model config: {e}") from None


def _parse(text: str, where: str) -> ModelConfig:
    try:
        d = json.loads(text)
        if isinstance(d, dict) and "model" in d and isinstance(d["model"], dict):
            d = d["model"]  # a file that wraps the config with other export facts
        return ModelConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise BackendError(f"model config in {where} is invalid: {e}") from None


def resolve_config(
    onnx_path: Path | None,
    metadata: dict[str, str] | None = None,
    pbtxt: Any | None = None,
    fallback: str | None = None,
) -> ModelConfig:
    for key in CONFIG_KEYS:
        if metadata and key in metadata:
            return _parse(metadata[key], f"ONNX metadata {key!r} of {onnx_path}")
    if onnx_path is not None:
        for folder in (onnx_path.parent, onnx_path.parent.parent):
            for name in CONFIG_FILES:
                f = folder / name
                if f.is_file():
                    return _parse(f.read_text(), str(f))
    if pbtxt is not None:
        for key in CONFIG_KEYS:
            if key in pbtxt.parameters:
                return _parse(pbtxt.parameters[key].string_value, f"config.pbtxt parameter {key!r}")
    if fallback:
        try:
            return load_config(fallback)
        except ValueError as e:
            raise BackendError(f"PEMT_CONFIG_NAME={fallback!r}: {e}") from None
    raise BackendError(
        f"the model at {onnx_path} does not say which config built it (no 'pemt.config' metadata, "
        "no config JSON next to it); re-export it, or set PEMT_CONFIG_NAME to its variant name"
    )
