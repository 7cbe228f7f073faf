"""Durable vector index for PEMT embeddings: SQLite (source of truth) + FAISS (search).

Torch-free. See ``store.py`` for the durability, concurrency and filter design.
"""

from ._snapshot import SnapshotError
from .store import INDEX_TYPES, IndexType, VectorIndex
from .types import ID_PATTERN, Classification, Hit, Item, Record, validate_id

__all__ = [
    "Classification",
    "Hit",
    "ID_PATTERN",
    "INDEX_TYPES",
    "IndexType",
    "Item",
    "Record",
    "SnapshotError",
    "VectorIndex",
    "validate_id",
]
