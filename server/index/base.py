"""The index interface the service talks to, and the errors every backend raises.

Two backends implement ``Index``: ``VectorIndex`` (``store.py``: FAISS in the process, SQLite
beside it; the default, one process per data directory) and ``MilvusIndex`` (``milvus.py``: a
Milvus collection that any number of API processes share). The routes use only what is here.

Shared semantics (both backends, one test suite: ``tests/test_index.py``):

- Items have an id, an optional clip id, a time span, JSON metadata, an optional JPEG thumbnail
  and one (D,) vector per modality (a non-empty subset of ``modalities``). Vectors are stored
  L2-normalized; scores are inner products (cosine).
- ``upsert_many`` writes all records or none (a bad record raises ``ValueError`` before
  anything is written) and returns once the write is durable: acknowledged means kept.
  Replacing an item keeps its ``created_at``.
- Filters are exact matches on top-level scalar metadata values (``types.validate_filter``:
  ``"1"``, ``1`` and ``true`` differ; ``1.0 == 1``), ANDed; ``exclude`` leaves ids out.
- ``search`` returns the k best hits within the filter, best first; ``classify`` is the k-NN
  vote of ``_vote.py`` among items whose metadata has the label key.
- ``list`` pages in id order (byte order; ids are ASCII, so SQLite's BINARY collation and
  Milvus's VARCHAR comparison agree): the ``limit`` smallest ids after the cursor ``after``
  (keyset paging, cheap at any depth), or after skipping ``offset`` (cost grows with the
  offset); not both. ``count`` is the number of items, or of one clip's windows.
- ``model_identity``/``set_model_identity``: the model that wrote the index (a JSON object,
  see ``server.core.identity``), recorded once and compared at start-up.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .types import Classification, Hit, Item, Record

__all__ = [
    "Index",
    "IndexDamagedError",
    "IndexLockedError",
    "IndexMissingError",
    "IndexUnavailableError",
]


class IndexDamagedError(RuntimeError):
    """The index must not be served as it is; the message says why and what to do."""


class IndexMissingError(IndexDamagedError):
    """``create=False`` and there is no index (no database, an empty one, no collection)."""


class IndexLockedError(RuntimeError):
    """Another process (or another open ``VectorIndex``) owns the index directory."""


class IndexUnavailableError(RuntimeError):
    """The index server (Milvus) cannot be reached or did not answer; retrying may succeed."""


@runtime_checkable
class Index(Protocol):
    """What the service needs from an index (see the module docstring for the contract)."""

    dim: int
    modalities: tuple[str, ...]

    def upsert_many(self, records: Iterable[Record]) -> list[str]: ...

    def delete(self, id: str) -> bool: ...

    def delete_many(self, ids: Iterable[str]) -> int: ...

    def delete_clip(self, clip_id: str) -> int: ...

    def get(self, id: str, *, with_vectors: bool = False) -> Item | None: ...

    def get_vector(self, id: str, modality: str = "fused") -> np.ndarray | None: ...

    def thumbnail(self, id: str) -> bytes | None: ...

    def list(
        self,
        offset: int = 0,
        limit: int = 100,
        *,
        clip_id: str | None = None,
        after: str | None = None,
    ) -> builtins.list[Item]: ...

    def count(self, clip_id: str | None = None) -> int: ...

    def search(
        self,
        vector: Any,
        k: int = 10,
        modality: str = "fused",
        filter: Mapping[str, Any] | None = None,
        *,
        exclude: Collection[str] = (),
    ) -> builtins.list[Hit]: ...

    def classify(
        self,
        vector: Any,
        k: int = 10,
        modality: str = "fused",
        filter: Mapping[str, Any] | None = None,
        *,
        exclude: Collection[str] = (),
        label_key: str = "label",
    ) -> Classification: ...

    def stats(self) -> dict[str, Any]: ...

    def model_identity(self) -> dict[str, Any] | None: ...

    def set_model_identity(self, identity: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...
