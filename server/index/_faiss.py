"""FAISS-side helpers of the index: a readers-writer lock and one modality's index state."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import faiss as _faiss
import numpy as np

# faiss ships type stubs that lag its SWIG API (SearchParametersHNSW, IDSelector*, ...).
faiss: Any = _faiss


class RWLock:
    """Readers-writer lock with writer preference (a waiting writer blocks new readers)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Space:
    """The FAISS index of one modality plus its not-yet-removed dead keys."""

    def __init__(self, index: Any, trained_at: int = 0) -> None:
        self.index = index
        self.dead: set[int] = set()
        self.trained_at = trained_at  # live count when the IVF was trained (0: not IVF yet)
        self.version = 0  # bumped on every mutation (GPU copies compare it)
        self._sel: tuple[Any, Any] | None = None

    @property
    def inner(self) -> Any:
        return faiss.downcast_index(self.index.index)

    @property
    def is_ivf(self) -> bool:
        return isinstance(self.inner, faiss.IndexIVF)

    @property
    def live(self) -> int:
        return int(self.index.ntotal) - len(self.dead)

    def keys(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        if len(keys):
            self.index.add_with_ids(vecs, keys)
            self.version += 1

    def mark_dead(self, keys: Iterable[int]) -> None:
        self.dead.update(keys)
        self._sel = None
        self.version += 1

    def remove_dead(self) -> None:
        if self.dead:
            self.index.remove_ids(np.fromiter(self.dead, dtype=np.int64))
            self.dead.clear()
            self._sel = None
            self.version += 1

    def selector(self) -> tuple[Any, Any] | None:
        """(batch, IDSelectorNot(batch)) skipping dead keys, None when there are none.

        Call under the read lock and keep the pair alive while searching: IDSelectorNot does
        not own the batch, and two readers may build the pair at once.
        """
        if not self.dead:
            return None
        sel = self._sel
        if sel is None:
            batch = faiss.IDSelectorBatch(np.fromiter(self.dead, dtype=np.int64))
            sel = self._sel = (batch, faiss.IDSelectorNot(batch))
        return sel


def auto_nlist(n: int) -> int:
    """IVF list count from size: sqrt(n) rounded to a power of two, 16 <= nlist <= n / 39."""
    nlist = 2 ** round(math.log2(max(math.sqrt(max(n, 1)), 1.0)))
    return int(max(16, min(nlist, n // 39, 65536)))
