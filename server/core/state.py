"""What the lifespan builds and every request uses: typed, owned by the app, no globals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from server.backends import Backend
from server.core.config import Settings
from server.core.decode import DecodePool
from server.core.errors import Busy, NotReady, StorageFull, is_storage_full
from server.core.identity import ModelIdentity
from server.core.media import MediaStore
from server.core.metrics import Metrics
from server.core.uploads import ReadLimits
from server.index.base import IndexUnavailableError

__all__ = ["AppState", "JobLimiter"]

T = TypeVar("T")


class JobLimiter:
    """At most ``limit`` media jobs at once; beyond that, 429 with Retry-After (no unbounded queue)."""

    def __init__(self, limit: int, wait_s: float, retry_after_s: int, metrics: Metrics) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self._sem = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0

    async def acquire(self) -> None:
        """Take a slot, or raise Busy (429 + Retry-After) when none frees within ``wait_s``."""
        acquired = False
        if not self._sem.locked():
            await self._sem.acquire()
            acquired = True
        elif self.wait_s > 0:
            self.waiting += 1
            self.metrics.jobs_waiting.set(self.waiting)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sem.acquire(), self.wait_s)
                    acquired = True
            finally:
                self.waiting -= 1
                self.metrics.jobs_waiting.set(self.waiting)
        if not acquired:
            self.metrics.jobs_rejected.inc()
            raise Busy(
                f"the server is busy ({self.limit} jobs running); retry after {self.retry_after_s} s",
                self.retry_after_s,
            )
        self.in_flight += 1
        self.metrics.jobs_in_flight.set(self.in_flight)

    def release(self) -> None:
        self.in_flight -= 1
        self.metrics.jobs_in_flight.set(self.in_flight)
        self._sem.release()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    @contextlib.asynccontextmanager
    async def background_slot(self) -> AsyncIterator[None]:
        """A slot for a background job: waits as long as it takes (a job has no client to
        answer 429 to; its queue is bounded where it is submitted)."""
        await self._sem.acquire()
        self.in_flight += 1
        self.metrics.jobs_in_flight.set(self.in_flight)
        try:
            yield
        finally:
            self.release()


@dataclass
class AppState:
    settings: Settings
    backend: Backend
    index: Any  # server.index.Index: VectorIndex (FAISS) or MilvusIndex
    decoder: DecodePool
    jobs: JobLimiter
    metrics: Metrics
    media: MediaStore  # kept source videos (PEMT_MEDIA_DIR, default data_dir/media)
    model: ModelIdentity  # the served model; the index was checked against it
    video_decoder: str = "cpu"  # PEMT_DECODER resolved at start-up: "cpu" | "nvdec"
    job_runner: Any = None  # server.core.jobs.JobRunner (POST /jobs), built by the lifespan
    # FAISS + SQLite calls leave the event loop (VectorIndex is thread-safe: one writer, readers)
    index_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="pemt-index")
    )
    started: bool = False

    @property
    def read_limits(self) -> ReadLimits:
        s = self.settings
        return ReadLimits(idle_s=s.upload_idle_timeout_s, min_rate=s.upload_min_rate)

    async def run_index(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking index call in the index pool. A write that finds the disk full
        (SQLite's SQLITE_FULL, ENOSPC) rolled back and raises ``StorageFull``."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.index_pool, lambda: fn(*args, **kwargs))
        except Exception as e:
            if isinstance(e, IndexUnavailableError):  # Milvus down: 503, retry later
                raise NotReady(str(e), code="index_unavailable", retry_after_s=5) from e
            if is_storage_full(e):
                raise StorageFull(
                    f"the index could not be written: the server's data directory is full ({e}); "
                    "nothing was stored, try again later (the operator must free space)"
                ) from e
            raise
