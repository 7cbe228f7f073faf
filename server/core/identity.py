"""Model identity: which model wrote an index, so that two embedding spaces never mix.

A model's identity is its config (sha256 of the canonical JSON of ``ModelConfig``), its
weights (``pemt.weights``: sha256 of the parameters, written by ``export/build_engine.py`` into
the ONNX metadata and config.pbtxt; for a repository exported before that, the ONNX backend
hashes ``model.onnx`` itself and the Triton backend knows no weights), its embedding size and a
version string (``pemt.version``, default ``<config name>-<first 12 hex of the weights>``).

The index records the identity of the model that first writes it. At every start the service
compares: another config, other weights (when both sides know them) or another size is
another embedding space, and the service refuses to start, naming both models and how to
re-index. An index that holds items but no identity (made before identities were recorded)
adopts the running model, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from server.backends.base import Backend
from server.core.errors import Conflict
from server.core.startup import StartupRefused

__all__ = ["ModelIdentity", "check_model", "model_identity", "require_same_space"]

log = logging.getLogger("pemt.server")


@dataclass(frozen=True)
class ModelIdentity:
    name: str  # the config's variant name (tiny, small, paper, ...)
    version: str
    embed_dim: int
    config_sha256: str
    weights_sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        weights = (self.weights_sha256 or "unknown")[:12]
        return (
            f"{self.version} (config {self.name!r} {self.config_sha256[:12]}, weights {weights}, "
            f"{self.embed_dim}-d)"
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelIdentity:
        return cls(
            name=str(d.get("name", "?")),
            version=str(d.get("version", "?")),
            embed_dim=int(d.get("embed_dim", 0)),
            config_sha256=str(d.get("config_sha256", "")),
            weights_sha256=d.get("weights_sha256"),
        )

    def same_space(self, other: ModelIdentity) -> bool:
        """Do vectors of the two models compare? Same size and config, same weights where
        both are known."""
        if (self.embed_dim, self.config_sha256) != (other.embed_dim, other.config_sha256):
            return False
        if self.weights_sha256 and other.weights_sha256:
            return self.weights_sha256 == other.weights_sha256
        return True


def _file_sha256(path: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def model_identity(backend: Backend) -> ModelIdentity:
    """The identity of the model a backend serves (see the module docstring)."""
    cfg = backend.cfg
    config = json.dumps(json.loads(cfg.to_json()), sort_keys=True, separators=(",", ":"))
    config_sha = hashlib.sha256(config.encode()).hexdigest()
    meta = getattr(backend, "model_meta", {}) or {}
    weights = meta.get("pemt.weights") or None
    model_file = getattr(backend, "model_file", None)
    if weights is None and model_file is not None:
        weights = "file:" + _file_sha256(model_file)
    version = (
        meta.get("pemt.version") or f"{cfg.name}-{(weights or config_sha).split(':')[-1][:12]}"
    )
    return ModelIdentity(cfg.name, version, cfg.embed_dim, config_sha, weights)


def require_same_space(served: ModelIdentity, given: dict[str, Any]) -> None:
    """Vectors embedded outside the service (``PUT /clips/{id}``, the bulk indexer) carry the
    identity of the model that made them: raise ``Conflict`` (409 ``model_mismatch``) unless
    they compare with the served model's (:meth:`ModelIdentity.same_space`)."""
    other = ModelIdentity.from_dict(given)
    if served.same_space(other):
        return
    raise Conflict(
        f"these vectors come from model {other.describe()}, but this service serves "
        f"{served.describe()}: another embedding space. Embed with the service's model (GET "
        "/info: model.identity; the bulk indexer must load the same model repository or Triton "
        "model) or upload the videos instead",
        code="model_mismatch",
    )


def check_model(index: Any, current: ModelIdentity, where: str) -> None:
    """Refuse (``StartupRefused``) an index written by another model; record the running
    model in an index that has none. ``where`` names the index in messages. Blocking."""
    recorded = index.model_identity()
    if recorded is None:
        if index.count():
            log.warning(
                "%s holds items but no record of the model that wrote them; recording %s "
                "(re-index if they came from another model)",
                where, current.describe(),
            )  # fmt: skip
        index.set_model_identity(current.to_dict())
        return
    stored = ModelIdentity.from_dict(recorded)
    if stored.same_space(current):
        if stored.weights_sha256 is None and current.weights_sha256:
            index.set_model_identity(current.to_dict())  # learn the weights now
        return
    raise StartupRefused(
        f"{where} was written by model {stored.describe()}, but this service runs model "
        f"{current.describe()}: their embeddings are different spaces and must not be mixed, "
        "so the service will neither write to nor search that index. Either serve the model "
        "that wrote it again (PEMT_MODEL_PATH / the Triton model repository), or re-index "
        "with the new model: point the service at a new, empty index (another PEMT_DATA_DIR, "
        "or another PEMT_MILVUS_COLLECTION) and upload the clips again (their kept sources "
        "are in the media folder), then retire the old one."
    )
