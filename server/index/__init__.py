"""Vector index for PEMT embeddings behind one interface (``base.Index``), two backends:

- ``VectorIndex`` (``store.py``, the default): SQLite (source of truth) + FAISS (search) in the
  service's process; one process per data directory. See ``store.py`` for the durability,
  damage, concurrency and filter design, ``_commits.py`` for how lost acknowledged writes are
  detected, and ``_admin.py`` for check, backup, restore and accept.
- ``MilvusIndex`` (``milvus.py``): a Milvus collection shared by any number of API processes.

Torch-free; ``milvus.py`` imports pymilvus only when used.
"""

from ._admin import accept_index, backup_index, check_index, restore_index
from ._snapshot import SnapshotError
from .base import (
    Index,
    IndexDamagedError,
    IndexLockedError,
    IndexMissingError,
    IndexUnavailableError,
)
from .store import INDEX_TYPES, IndexType, VectorIndex
from .types import ID_PATTERN, Classification, Hit, Item, Record, validate_id

__all__ = [
    "Classification",
    "Hit",
    "ID_PATTERN",
    "INDEX_TYPES",
    "Index",
    "IndexDamagedError",
    "IndexLockedError",
    "IndexMissingError",
    "IndexType",
    "IndexUnavailableError",
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
