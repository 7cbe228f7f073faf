"""Records the index takes and returns, and the validation of what callers pass in.

No FAISS, no SQLite here: plain dataclasses with ``to_dict()`` for JSON responses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# re-exported: the index checks ids by the service's one rule (server.core.ids)
from server.core.ids import ID_PATTERN as ID_PATTERN
from server.core.ids import validate_id as validate_id

DEFAULT_MODALITIES: tuple[str, ...] = ("fused", "audio", "visual")
MAX_METADATA_BYTES = 64 * 1024
MAX_THUMBNAIL_BYTES = 1024 * 1024
MAX_K = 1000

Scalar = str | int | float | bool | None


def canonical_value(value: object) -> str:
    """JSON text a scalar metadata value is indexed and matched by.

    Types matter (``"1"``, ``1`` and ``true`` differ), but an integral float equals the int
    (``1.0 == 1``), as it does in Python and JSON.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return json.dumps(value, allow_nan=False)


def is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def validate_metadata(metadata: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """Return (metadata as a dict, its JSON text); raise ``ValueError`` if not storable."""
    if metadata is None:
        return {}, "{}"
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a JSON object (dict), got {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):
            raise ValueError(f"metadata keys must be strings, got {key!r}")
    try:
        text = json.dumps(dict(metadata), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serializable without NaN/inf: {exc}") from exc
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    return json.loads(text), text


def validate_filter(filter: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Turn ``{key: value}`` into sorted ``(key, canonical value)`` pairs (exact match, AND)."""
    if not filter:
        return []
    if not isinstance(filter, Mapping):
        raise ValueError(f"filter must be a dict of metadata key -> value, got {filter!r}")
    pairs = []
    for key, value in filter.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"filter keys must be non-empty strings, got {key!r}")
        if not is_scalar(value):
            raise ValueError(
                f"filter value for {key!r} must be a string, number, bool or null, got {value!r}"
            )
        try:
            pairs.append((key, canonical_value(value)))
        except ValueError as exc:
            raise ValueError(f"filter value for {key!r} must be finite, got {value!r}") from exc
    return sorted(pairs)


MAX_PAGE = 10_000


def check_page(offset: int, limit: int, after: str | None) -> None:
    """The arguments of ``list``: ``0 <= offset``, ``1 <= limit <= MAX_PAGE``, ``after`` a valid
    id (any id, stored or not: the page starts after it in id order), and not both ``after``
    and a non-zero ``offset``."""
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"need offset >= 0 and 1 <= limit <= {MAX_PAGE}, got {offset}, {limit}")
    if after is not None:
        validate_id(after, "after")
        if offset:
            raise ValueError(
                f"pass either after= (a cursor: the last id of the previous page) or offset=, "
                f"not both (got after={after!r}, offset={offset})"
            )


def matches(metadata: Mapping[str, Any], conditions: list[tuple[str, str]]) -> bool:
    """Python side of the filter: the same rule the SQL tag table applies."""
    for key, want in conditions:
        if key not in metadata or not is_scalar(metadata[key]):
            return False
        if canonical_value(metadata[key]) != want:
            return False
    return True


def as_vector(value: Any, dim: int, what: str, *, normalize: bool = True) -> np.ndarray:
    """Return ``value`` as a contiguous float32 (dim,) vector, L2-normalized if asked."""
    try:
        vec = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a sequence of {dim} numbers: {exc}") from exc
    if vec.ndim == 2 and vec.shape[0] == 1:
        vec = vec[0]
    if vec.shape != (dim,):
        raise ValueError(f"{what} must have shape ({dim},), got {vec.shape}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"{what} contains NaN or inf")
    if normalize:
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            raise ValueError(f"{what} is all zeros; it has no direction to compare by cosine")
        vec = vec / norm
    return np.ascontiguousarray(vec, dtype=np.float32)


@dataclass(frozen=True)
class Record:
    """One item to write: ``vectors`` maps modality name -> (D,) vector (at least one).

    ``clip_id`` groups the windows of one video; when omitted, ``metadata["clip_id"]`` is used
    if it is a valid id. ``thumbnail`` is JPEG bytes.
    """

    id: str
    vectors: Mapping[str, Any]
    metadata: Mapping[str, Any] | None = None
    start: float | None = None
    end: float | None = None
    thumbnail: bytes | None = None
    clip_id: str | None = None


@dataclass
class Item:
    """A stored item as ``get``/``list`` return it. ``vectors`` only when asked for."""

    id: str
    clip_id: str | None
    start: float | None
    end: float | None
    metadata: dict[str, Any]
    modalities: tuple[str, ...]
    has_thumbnail: bool
    created_at: float
    updated_at: float
    vectors: dict[str, np.ndarray] | None = None

    def hit(self, score: float) -> Hit:
        """This item as a search result with ``score``."""
        return Hit(self.id, float(score), self.start, self.end, self.metadata, self.clip_id,
                   self.has_thumbnail)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "clip_id": self.clip_id,
            "start": self.start,
            "end": self.end,
            "metadata": self.metadata,
            "modalities": list(self.modalities),
            "has_thumbnail": self.has_thumbnail,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.vectors is not None:
            out["vectors"] = {m: v.tolist() for m, v in self.vectors.items()}
        return out


@dataclass
class Hit:
    """One search result; ``score`` is the inner product = cosine similarity."""

    id: str
    score: float
    start: float | None
    end: float | None
    metadata: dict[str, Any]
    clip_id: str | None = None
    has_thumbnail: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "start": self.start,
            "end": self.end,
            "metadata": self.metadata,
            "clip_id": self.clip_id,
            "has_thumbnail": self.has_thumbnail,
        }


@dataclass
class Classification:
    """k-NN vote: ``label`` is the top label (None when nothing labeled is indexed);
    ``scores`` are the per-label shares of the similarity-weighted vote (sum to 1)."""

    label: str | None
    scores: dict[str, float] = field(default_factory=dict)
    neighbors: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "scores": self.scores,
            "neighbors": [h.to_dict() for h in self.neighbors],
        }


def prepare_record(
    rec: Record, modalities: tuple[str, ...], dim: int, *, normalize: bool = True
) -> dict[str, Any]:
    """Check one record and return what a backend stores: id, clip_id, start, end, metadata
    (JSON text), vectors (modality -> normalized float32), thumbnail, tags ((name, canonical
    value) of every top-level scalar). Raises ``ValueError`` saying what is wrong."""
    if not isinstance(rec, Record):
        raise ValueError(f"expected a Record, got {type(rec).__name__}")
    item_id = validate_id(rec.id)
    if not isinstance(rec.vectors, Mapping) or not rec.vectors:
        raise ValueError(f"{item_id}: vectors must be a non-empty dict of modality -> vector")
    vectors = {}
    for m, v in rec.vectors.items():
        if m not in modalities:
            raise ValueError(f"{item_id}: unknown modality {m!r}; known: {list(modalities)}")
        vectors[m] = as_vector(v, dim, f"{item_id} {m} vector", normalize=normalize)
    metadata, meta_text = validate_metadata(rec.metadata)
    clip_id = rec.clip_id
    if clip_id is None and isinstance(metadata.get("clip_id"), str):
        clip_id = metadata["clip_id"]
    if clip_id is not None:
        validate_id(clip_id, "clip_id")
    start, end = rec.start, rec.end
    for name, t in (("start", start), ("end", end)):
        if t is not None and (not isinstance(t, int | float) or not math.isfinite(t) or t < 0):
            raise ValueError(
                f"{item_id}: {name} must be a finite number of seconds >= 0, got {t!r}"
            )
    if start is not None and end is not None and end < start:
        raise ValueError(f"{item_id}: end ({end}) is before start ({start})")
    thumb = rec.thumbnail
    if thumb is not None:
        if not isinstance(thumb, bytes | bytearray | memoryview):
            raise ValueError(f"{item_id}: thumbnail must be JPEG bytes")
        thumb = bytes(thumb)
        if not thumb.startswith(b"\xff\xd8") or len(thumb) > MAX_THUMBNAIL_BYTES:
            raise ValueError(
                f"{item_id}: thumbnail must be a JPEG of at most {MAX_THUMBNAIL_BYTES} bytes"
            )
    tags = [(k, canonical_value(v)) for k, v in metadata.items() if is_scalar(v)]
    return {
        "id": item_id,
        "clip_id": clip_id,
        "start": None if start is None else float(start),
        "end": None if end is None else float(end),
        "metadata": meta_text,
        "vectors": vectors,
        "thumbnail": thumb,
        "tags": tags,
    }
