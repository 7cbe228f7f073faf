"""Windows embedded outside the service (``PUT /clips/{id}``, the bulk indexer): which model
made them, and whether that is the model this service serves.

A model's identity (the fields of the scale-out branch's ``server.core.identity``, computed the
same way, so the two can merge into one): ``config_sha256`` (sha256 of the canonical JSON of
its ``ModelConfig``), ``weights_sha256`` (the ``pemt.weights`` ONNX metadata when the export
wrote it, else ``file:`` + sha256 of ``model.onnx`` for an ONNX backend, else None: a Triton
backend does not see the weights), ``embed_dim``, ``name`` and ``version``. Vectors from
another config or size, or other weights where both sides know them, are another embedding
space: the service refuses them (409 ``model_mismatch``) rather than mix them into its index.

The bulk indexer computes the identity with :func:`model_identity` on the same backend classes
the service uses, so both sides hash the same things.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from server.core.errors import Conflict

__all__ = ["model_identity", "same_space"]


def _file_sha256(path: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def model_identity(backend: Any) -> dict[str, Any]:
    """The identity of the model ``backend`` serves (cached on it: hashing the file once).
    Blocking (reads the model file the first time)."""
    cached = getattr(backend, "_pemt_identity", None)
    if cached is not None:
        return dict(cached)
    cfg = backend.cfg
    config = json.dumps(json.loads(cfg.to_json()), sort_keys=True, separators=(",", ":"))
    config_sha = hashlib.sha256(config.encode()).hexdigest()
    meta = getattr(backend, "model_meta", None) or {}
    weights = meta.get("pemt.weights") or None
    model_file = getattr(backend, "path", None) if getattr(backend, "name", "") == "onnx" else None
    if weights is None and model_file is not None:
        weights = "file:" + _file_sha256(model_file)
    version = (
        meta.get("pemt.version") or f"{cfg.name}-{(weights or config_sha).split(':')[-1][:12]}"
    )
    identity = {
        "name": cfg.name,
        "version": version,
        "embed_dim": int(cfg.embed_dim),
        "config_sha256": config_sha,
        "weights_sha256": weights,
    }
    backend._pemt_identity = identity
    return dict(identity)


def same_space(served: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Raise ``Conflict`` (``model_mismatch``) unless vectors of ``given`` compare with those
    of ``served``: same size and config, same weights where both are known."""
    problems = []
    if int(given.get("embed_dim") or 0) != served["embed_dim"]:
        problems.append(f"embed_dim {given.get('embed_dim')} != {served['embed_dim']}")
    if given.get("config_sha256") != served["config_sha256"]:
        problems.append(
            f"config {str(given.get('config_sha256'))[:12]} != {served['config_sha256'][:12]}"
        )
    w_given, w_served = given.get("weights_sha256"), served.get("weights_sha256")
    if w_given and w_served and w_given != w_served:
        problems.append(f"weights {str(w_given)[:17]} != {str(w_served)[:17]}")
    if problems:
        raise Conflict(
            f"these vectors come from another model than the one this service serves "
            f"({served['version']}): {'; '.join(problems)}. Embed with the service's model "
            "(GET /info: model.identity; the bulk indexer must load the same model repository "
            "or Triton model) or upload the videos instead",
            code="model_mismatch",
        )
