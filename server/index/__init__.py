"""Durable vector index for PEMT embeddings: SQLite (source of truth) + FAISS (search).

Torch-free. See ``store.py`` for the durability, damage, concurrency and filter design,
``_commits.py`` for how lost acknowledged writes are detected, and ``_admin.py`` for check,
backup, restore and accept.
"""

from ._admin import accept_index, backup_index, check_index, restore_index
from ._snapshot import SnapshotError
from .store import (
    INDEX_TYPES,
    IndexDamagedError,
    IndexLockedError,
    IndexMissingError,
    IndexType,
    VectorIndex,
)
from .types import ID_PATTERN, Classification, Hit, Item, Record, validate_id

__all__ = [
    "Classification",
    "Hit",
    "ID_PATTERN",
    "INDEX_TYPES",
    "IndexDamagedError",
    "IndexLockedError",
    "IndexMissingError",
    "IndexType",
    "Item",
    "Record",
    "SnapshotError",
    "VectorIndex",
    "accept_index",
    "backup_index",
    "check_index",
    "restore_index",
    "validate_id",
]
