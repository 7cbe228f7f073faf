"""An optional GPU copy of the FAISS indexes, for unfiltered searches (flat and IVF only).

Copies carry the CPU index's version; a stale copy is never used. A new copy is made at most
every ``REFRESH_S`` seconds, so a stream of writes does not turn every search into a
host-to-device copy. Not exercised in CI: no GPU FAISS there.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import faiss as _faiss

from ._faiss import Space

__all__ = ["REFRESH_S", "GpuMirror"]

log = logging.getLogger(__name__)
faiss: Any = _faiss  # type stubs lag the SWIG API
REFRESH_S = 5.0


class GpuMirror:
    """GPU copies of each modality's index; ``create`` returns None without GPU FAISS."""

    def __init__(self) -> None:
        self.res = faiss.StandardGpuResources()
        self.copies: dict[str, tuple[Space, int, Any]] = {}
        self.made: dict[str, float] = {}
        self.lock = threading.Lock()
        self.failed = False

    @classmethod
    def create(cls, use_gpu: bool, index_type: str) -> GpuMirror | None:
        if not use_gpu:
            return None
        if faiss.get_num_gpus() <= 0 or not hasattr(faiss, "index_cpu_to_gpu"):
            log.info("use_gpu: no GPU FAISS here, searching on the CPU")
            return None
        if index_type == "hnsw":
            log.info("use_gpu: HNSW has no GPU form, searching on the CPU")
            return None
        return cls()

    def index(self, modality: str, space: Space, nprobe: int | None) -> Any:
        """A current GPU copy of ``space`` if there is one (or one can be made now), else None:
        search on the CPU. ``nprobe`` is set on IVF copies."""
        if self.failed:
            return None
        copy = self.copies.get(modality)
        if copy is not None and copy[0] is space and copy[1] == space.version:
            return copy[2]
        if time.monotonic() - self.made.get(modality, -1e9) < REFRESH_S or not self.lock.acquire(
            blocking=False
        ):
            return None
        try:
            gpu = faiss.index_cpu_to_gpu(self.res, 0, space.index)
            if space.is_ivf and nprobe is not None:
                faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", nprobe)
        except RuntimeError as exc:
            log.warning("GPU copy failed (%s); searching on the CPU from now on", exc)
            self.failed = True
            return None
        finally:
            self.lock.release()
        self.copies[modality] = (space, space.version, gpu)
        self.made[modality] = time.monotonic()
        return gpu
