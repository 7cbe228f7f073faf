"""Background jobs for long videos (``POST /jobs``): durable, resumable, bounded.

A job embeds one file (an upload kept in ``data_dir/jobs/`` until the job ends, or a file under
``PEMT_JOB_ROOTS``) and stores it as one clip. Its state lives in its own SQLite database,
``data_dir/jobs.sqlite`` (WAL, ``synchronous=FULL``), apart from the index.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled`` (a queued job can be
cancelled before it runs). At most ``PEMT_JOB_QUEUE`` jobs are unfinished at once (more is
429); ``PEMT_JOB_WORKERS`` asyncio tasks in the service process run them in submission order,
each holding one of the ``PEMT_MAX_CONCURRENT_JOBS`` slots and one decode child while it
decodes.

Writing as it goes. The decode child streams windows (``server.core.decode``); each batch of
``PEMT_MAX_BATCH`` windows is embedded and its vectors and thumbnails are committed to the
job's ``windows`` table in one transaction together with the job's progress. So the service
holds one batch whatever the video's length, and a restart loses at most the batch in flight.

Nothing half-written is searchable: windows are staged in the jobs database, not in the index,
and published once every window is in, through the same call as ``/embed``
(``store_clip``: one ``upsert_many``, all or nothing in every index backend). Staging was chosen
over writing windows into the index with a "complete" flag because a flag would have to be
honoured by every reader (search, classify, list, get, the vote, both index backends) and a
crash would leave flagged rows to clean; staged rows are invisible by construction. The cost is
one copy of a clip's vectors (about 10 KB a window) until it is published.

Restarts. At start-up a job found ``running`` (the service stopped or was killed mid-job) is
resumed: its decode starts again from the beginning of the file, the child skips the windows
already committed (decoding but not sending them), and embedding continues from the first
missing window. A job whose every window was committed is published again (idempotent: the
same ids are replaced). A job whose file is gone, or (a server-side path) changed since it was
submitted, fails with the reason, and so does a job that was running when the service
stopped ``MAX_ATTEMPTS`` times (a file that kills the service must not do so forever). A
cancelled or failed job's staged windows and kept upload are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from server.core.decode import WindowBatch, least_windows
from server.core.errors import (
    Busy,
    Conflict,
    Forbidden,
    InvalidRequest,
    MediaRejected,
    NotFound,
    ServiceError,
    is_storage_full,
)

__all__ = [
    "FINAL_STATES",
    "STATES",
    "JobRecord",
    "JobRunner",
    "JobStore",
    "file_fingerprint",
    "new_job_id",
    "resolve_job_path",
]

if TYPE_CHECKING:
    from server.core.state import AppState

log = logging.getLogger("pemt.server.jobs")

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
DB_NAME = "jobs.sqlite"
MAX_ATTEMPTS = 3  # a job the service stopped during this many times is failed, not resumed
MODALITY_COLUMNS = ("fused", "audio", "visual")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    clip_id TEXT NOT NULL,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT,
    content_type TEXT,
    fingerprint TEXT,
    params TEXT NOT NULL,
    duration_s REAL,
    windows_total INTEGER,
    windows_done INTEGER NOT NULL DEFAULT 0,
    seconds_done REAL NOT NULL DEFAULT 0,
    decoded INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS windows (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start REAL NOT NULL,
    "end" REAL NOT NULL,
    has_audio INTEGER NOT NULL,
    has_video INTEGER NOT NULL,
    fused BLOB NOT NULL,
    audio BLOB,
    visual BLOB,
    thumbnail BLOB,
    PRIMARY KEY (job_id, idx)
);
"""


@dataclass
class JobRecord:
    """One job as stored (``params``: metadata, window_segments, stride)."""

    id: str
    state: str
    clip_id: str
    source: str  # "upload" | "path"
    path: str  # the file decoded: the kept upload, or the resolved server-side path
    name: str | None
    content_type: str | None
    fingerprint: str | None
    params: dict[str, Any]
    duration_s: float | None
    windows_total: int | None
    windows_done: int
    seconds_done: float
    decoded: bool
    attempts: int
    error_code: str | None
    error_message: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    seq: int = 0

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class StagedWindow:
    index: int
    start: float
    end: float
    has_audio: bool
    has_video: bool
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    thumbnail: bytes | None = None


def file_fingerprint(path: str | Path) -> str:
    """device:inode:size:mtime_ns of a file: a server-side file that changed since its job was
    submitted is not resumed."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def resolve_job_path(given: str, roots: tuple[Path, ...]) -> Path:
    """The real path of ``given`` (symlinks and ``..`` resolved) if it lies inside one of
    ``roots`` (also resolved) and is a regular file. Outside: ``Forbidden`` (403), whether or
    not it exists, so the answer says nothing about files outside; inside but missing or not a
    file: ``InvalidRequest`` (400)."""
    if not roots:
        raise Forbidden(
            "this server reads no server-side paths (PEMT_JOB_ROOTS is empty); upload the file "
            "instead",
            code="path_not_allowed",
        )
    if not given or "\x00" in given or not os.path.isabs(given):
        raise InvalidRequest(
            f"path {given[:200]!r} must be an absolute path under one of the server's job roots "
            f"({', '.join(map(str, roots))})",
            code="invalid_path",
        )
    real = Path(os.path.realpath(given))
    if not any(real.is_relative_to(os.path.realpath(r)) for r in roots):
        raise Forbidden(
            f"path {given[:200]!r} is outside the folders this server may read "
            f"(PEMT_JOB_ROOTS: {', '.join(map(str, roots))}); nothing was read",
            code="path_not_allowed",
        )
    if not real.is_file():
        raise InvalidRequest(
            f"path {given[:200]!r} is not a file under the job roots; check the name",
            code="invalid_path",
        )
    return real


class JobStore:
    """``data_dir/jobs.sqlite``. Blocking; one connection serialised by a lock (the runner
    calls it from one thread)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute("PRAGMA busy_timeout=10000")
        self._con.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    @staticmethod
    def _job(row: sqlite3.Row | tuple[Any, ...], names: list[str]) -> JobRecord:
        d = dict(zip(names, row, strict=True))
        d["params"] = json.loads(d["params"])
        d["decoded"] = bool(d["decoded"])
        return JobRecord(**d)

    def _select(self, where: str, args: tuple[Any, ...]) -> list[JobRecord]:
        with self._lock:
            cur = self._con.execute(f"SELECT * FROM jobs {where}", args)
            names = [c[0] for c in cur.description]
            return [self._job(r, names) for r in cur.fetchall()]

    # --- jobs -------------------------------------------------------------------------------

    def add(self, job: JobRecord, max_unfinished: int) -> JobRecord:
        """Insert a queued job unless ``max_unfinished`` jobs are already unfinished (Busy)."""
        with self._tx() as con:
            (n,) = con.execute(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')"
            ).fetchone()
            if n >= max_unfinished:
                raise Busy(
                    f"the job queue is full ({n} jobs queued or running, PEMT_JOB_QUEUE="
                    f"{max_unfinished}); retry later",
                    retry_after_s=30,
                )
            cur = con.execute(
                "INSERT INTO jobs (id, state, clip_id, source, path, name, content_type, "
                "fingerprint, params, created_at) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.clip_id,
                    job.source,
                    job.path,
                    job.name,
                    job.content_type,
                    job.fingerprint,
                    json.dumps(job.params),
                    job.created_at,
                ),
            )
            job.seq = int(cur.lastrowid or 0)
        return job

    def get(self, job_id: str) -> JobRecord | None:
        found = self._select("WHERE id = ?", (job_id,))
        return found[0] if found else None

    def page(
        self, offset: int = 0, limit: int = 100, state: str | None = None
    ) -> tuple[list[JobRecord], int]:
        """Newest first; and how many match."""
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        with self._lock:
            (total,) = self._con.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()
        jobs = self._select(f"{where} ORDER BY seq DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        return jobs, int(total)

    def unfinished(self) -> list[JobRecord]:
        return self._select("WHERE state IN ('queued', 'running') ORDER BY seq", ())

    def start(self, job_id: str) -> JobRecord | None:
        """queued -> running (None if it is no longer queued: cancelled meanwhile)."""
        with self._tx() as con:
            cur = con.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, "
                "started_at = COALESCE(started_at, ?) WHERE id = ? AND state = 'queued'",
                (time.time(), job_id),
            )
            if cur.rowcount == 0:
                return None
        return self.get(job_id)

    def requeue_running(self) -> int:
        """running -> queued (at start-up: the process that ran them is gone)."""
        with self._tx() as con:
            return con.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'").rowcount

    def finish(
        self, job_id: str, state: str, code: str | None = None, msg: str | None = None
    ) -> bool:
        """A final state, and the staged windows go (one transaction). False if the job had
        already finished (the first final state stands)."""
        assert state in FINAL_STATES, state
        with self._tx() as con:
            cur = con.execute(
                "UPDATE jobs SET state = ?, error_code = ?, error_message = ?, finished_at = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (state, code, msg, time.time(), job_id),
            )
            con.execute("DELETE FROM windows WHERE job_id = ?", (job_id,))
            return cur.rowcount > 0

    def prune(self, keep: int) -> list[JobRecord]:
        """Forget finished jobs beyond the newest ``keep``; returns those forgotten."""
        old = self._select(
            "WHERE state IN ('done', 'failed', 'cancelled') ORDER BY seq DESC LIMIT -1 OFFSET ?",
            (keep,),
        )
        if old:
            with self._tx() as con:
                con.executemany("DELETE FROM jobs WHERE id = ?", [(j.id,) for j in old])
        return old

    # --- windows ----------------------------------------------------------------------------

    def commit_batch(
        self,
        job_id: str,
        batch: WindowBatch,
        vectors: dict[str, np.ndarray],
        windows_total: int | None,
    ) -> None:
        """Stage one embedded batch and the job's progress, in one transaction."""
        rows = []
        for i, w in enumerate(batch.windows):
            fused = np.asarray(vectors["fused"][i], np.float32).tobytes()
            audio = np.asarray(vectors["audio"][i], np.float32).tobytes() if w.has_audio else None
            visual = np.asarray(vectors["visual"][i], np.float32).tobytes() if w.has_video else None
            rows.append(
                (job_id, w.index, w.start, w.end, int(w.has_audio), int(w.has_video),
                 fused, audio, visual, batch.thumbnails[i])
            )  # fmt: skip
        last = batch.windows[-1]
        with self._tx() as con:
            con.executemany(
                'INSERT OR REPLACE INTO windows (job_id, idx, start, "end", has_audio, '
                "has_video, fused, audio, visual, thumbnail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            con.execute(
                "UPDATE jobs SET windows_done = ?, seconds_done = ?, duration_s = ?, "
                "windows_total = ? WHERE id = ?",
                (last.index + 1, last.end, batch.duration_s, windows_total, job_id),
            )

    def mark_decoded(self, job_id: str) -> None:
        """Every window is staged: the total is now exact."""
        with self._tx() as con:
            con.execute(
                "UPDATE jobs SET decoded = 1, windows_total = windows_done, "
                "seconds_done = COALESCE(duration_s, seconds_done) WHERE id = ?",
                (job_id,),
            )

    def staged(self, job_id: str) -> list[StagedWindow]:
        with self._lock:
            rows = self._con.execute(
                'SELECT idx, start, "end", has_audio, has_video, fused, audio, visual, thumbnail '
                "FROM windows WHERE job_id = ? ORDER BY idx",
                (job_id,),
            ).fetchall()
        out = []
        for idx, start, end, has_a, has_v, *blobs, thumb in rows:
            vectors = {
                m: np.frombuffer(b, np.float32)
                for m, b in zip(MODALITY_COLUMNS, blobs, strict=True)
                if b is not None
            }
            out.append(StagedWindow(idx, start, end, bool(has_a), bool(has_v), vectors, thumb))
        return out


class _Cancelled(Exception):
    """The job was cancelled through DELETE /jobs/{id}."""


class JobRunner:
    """The workers, the queue and the jobs' files (``data_dir/jobs/``). Built and closed by the
    lifespan; every public method runs on the event loop."""

    def __init__(self, state: AppState, store: JobStore, files: Path) -> None:
        self.state = state
        self.store = store
        self.files = Path(files)
        self.files.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pemt-jobs")
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel: set[str] = set()
        self._publishing: set[str] = set()

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Requeue jobs a stopped process left running, drop files no job owns, start the
        workers."""
        for job in await self._db(self.store.unfinished):
            if job.state == "running" and job.attempts >= MAX_ATTEMPTS:
                await self._end(
                    job,
                    "failed",
                    "interrupted",
                    f"the service stopped {job.attempts} times while running this job; it is "
                    "not resumed again (check the server log, then submit it again)",
                )
        resumed = await self._db(self.store.requeue_running)
        if resumed:
            log.warning("resuming %d job(s) left running by the previous process", resumed)
        pending = await self._db(self.store.unfinished)
        owned = {Path(j.path).name for j in pending if j.source == "upload"}
        for p in self.files.iterdir():
            if p.is_file() and p.name not in owned:
                log.warning("jobs folder: removing %s (no unfinished job owns it)", p)
                p.unlink(missing_ok=True)
        for job in pending:
            self._queue.put_nowait(job.id)
        for i in range(self.state.settings.job_workers):
            self._workers.append(asyncio.create_task(self._worker(), name=f"pemt-job-{i}"))

    async def close(self) -> None:
        """Stop the workers. A running job stays ``running`` in the database and resumes at
        the next start from its last committed batch."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pool.shutdown(wait=True)
        self.store.close()

    # --- requests -----------------------------------------------------------------------------

    def upload_path(self, job_id: str, suffix: str) -> Path:
        return self.files / f"{job_id}{suffix}"

    async def submit(self, job: JobRecord) -> JobRecord:
        """Record a queued job (Busy when the queue is full) and wake a worker."""
        job = await self._db(self.store.add, job, self.state.settings.job_queue)
        self._queue.put_nowait(job.id)
        return job

    async def get(self, job_id: str) -> JobRecord:
        job = await self._db(self.store.get, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}; GET /jobs lists the jobs this server remembers")
        return job

    async def page(self, offset: int, limit: int, state: str | None) -> tuple[list[JobRecord], int]:
        return await self._db(self.store.page, offset, limit, state)  # type: ignore[no-any-return]

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job (its staged windows and kept upload go); a finished
        job is 409."""
        job = await self.get(job_id)
        if job.finished:
            raise Conflict(
                f"job {job_id!r} already ended ({job.state}); there is nothing to cancel",
                code="job_finished",
            )
        if job_id in self._publishing:
            raise Conflict(
                f"job {job_id!r} has embedded every window and is storing them; it ends done in "
                "a moment (delete the clip afterwards to remove it)",
                code="job_finished",
            )
        task = self._running.get(job_id)
        if task is not None:
            self._cancel.add(job_id)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(task)
        elif await self._db(self.store.finish, job_id, "cancelled", "cancelled", "cancelled"):
            self._remove_upload(job)
        return await self.get(job_id)

    # --- work ---------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            job_id = await self._queue.get()
            job = await self._db(self.store.start, job_id)
            if job is None:
                continue  # cancelled while queued
            task = asyncio.create_task(self._run(job), name=f"pemt-job-{job_id}")
            self._running[job_id] = task
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():  # the worker itself is stopping: stop the job too
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    raise
            except Exception:  # noqa: BLE001 - _run records its own failures
                log.exception("job %s: unexpected error", job_id)
            finally:
                self._running.pop(job_id, None)
                self._cancel.discard(job_id)

    async def _run(self, job: JobRecord) -> None:
        try:
            try:
                self._check_source(job)
                if not job.decoded:
                    await self._decode(job)
                    await self._db(self.store.mark_decoded, job.id)
                self._publishing.add(job.id)
                await self._publish_whole(job)
            except asyncio.CancelledError:
                if job.id in self._cancel:
                    raise _Cancelled from None
                raise  # shutting down: the job stays running and resumes at the next start
        except _Cancelled:
            await self._end(job, "cancelled", "cancelled", "cancelled through DELETE /jobs/{id}")
        except ServiceError as e:
            await self._end(job, "failed", e.code, e.message)
        except Exception as e:  # noqa: BLE001 - a backend or disk failure fails this job only
            if is_storage_full(e):
                await self._end(
                    job,
                    "failed",
                    "storage_full",
                    f"the server's data directory filled up while embedding ({e}); nothing of "
                    "this job was stored: submit it again once the operator has freed space",
                )
                return
            log.exception("job %s failed", job.id)
            await self._end(job, "failed", "internal", f"{type(e).__name__}: {e}")
        else:
            await self._end(job, "done")
        finally:
            self._publishing.discard(job.id)

    def _check_source(self, job: JobRecord) -> None:
        if job.decoded:
            return  # everything is staged; the file is needed only as the kept media
        if not os.path.isfile(job.path):
            raise MediaRejected(
                "source_missing",
                f"the file of this job ({job.name or job.path}) is no longer on the server "
                f"(after {job.attempts} start(s)); submit the job again",
            )
        if job.source == "path":
            real = resolve_job_path(job.path, self.state.settings.job_roots)
            if str(real) != job.path or file_fingerprint(real) != job.fingerprint:
                raise MediaRejected(
                    "source_changed",
                    f"{job.name} changed on the server since the job was submitted (or moved "
                    "outside PEMT_JOB_ROOTS); submit the job again to embed the new file",
                )

    async def _decode(self, job: JobRecord) -> None:
        from server.core.pipeline import MODALITIES, decode_request

        st = self.state
        s = st.settings
        req = decode_request(
            st,
            job.path,
            job.params.get("window_segments"),
            job.params.get("stride"),
            job=True,
            skip_windows=job.windows_done,
        )
        media = st.backend.cfg.media
        stride_seg = (
            round(req.stride_s / media.segment_seconds)
            if req.stride_s
            else max(1, media.num_segments // 2)
        )
        async with st.jobs.background_slot():
            batches = st.decoder.stream(req, st.backend.max_batch, timeout_s=s.job_decode_timeout_s)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    outputs = await st.backend.embed(batch.inputs)
                    vectors = {m: np.asarray(outputs[n], np.float32) for m, n in MODALITIES.items()}
                    total = None
                    if batch.duration_s is not None:
                        window = job.params.get("window_segments") or media.num_segments
                        total = least_windows(
                            batch.duration_s, media.segment_seconds, window, stride_seg
                        )
                    await self._db(self.store.commit_batch, job.id, batch, vectors, total)
                    st.metrics.windows.inc(len(batch.windows))

    async def _publish_whole(self, job: JobRecord) -> None:
        """Publish, and let a write that started finish even if the service is stopping (it
        is one index transaction either way; waiting keeps the index from closing under it)."""
        pub = asyncio.ensure_future(self._publish(job))
        while not pub.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(pub)
        pub.result()

    async def _publish(self, job: JobRecord) -> None:
        """Every staged window into the index at once (``store_clip``), with the kept upload."""
        from server.api.routes.embed import store_clip
        from server.core.ids import window_id
        from server.core.media import choose_suffix
        from server.core.pipeline import window_metadata
        from server.index.types import Record

        st = self.state
        staged = await self._db(self.store.staged, job.id)
        if not staged:
            raise MediaRejected("empty", "the file gave no windows; nothing was stored")
        n = len(staged)
        meta = job.params.get("metadata") or {}
        records = [
            Record(
                id=window_id(job.clip_id, w.index, n),
                vectors=w.vectors,
                clip_id=job.clip_id,
                start=w.start,
                end=w.end,
                thumbnail=w.thumbnail,
                metadata=window_metadata(meta, job.clip_id, w),  # type: ignore[arg-type]
            )
            for w in staged
        ]
        upload = Path(job.path)
        if job.source == "upload" and not upload.is_file():
            # published before a restart, and the upload already became the clip's kept file
            await st.run_index(store_clip, st.index, job.clip_id, records)
            return
        keep: Path | None = None
        if job.source == "upload" and st.settings.keep_media:
            suffix = choose_suffix(upload, job.name, job.content_type)
            keep = await st.run_index(st.media.stage, upload, suffix)
        try:
            await st.run_index(store_clip, st.index, job.clip_id, records, st.media, keep)
            keep = None  # committed: it is the clip's file now
        finally:
            st.media.discard(keep)

    async def _end(
        self, job: JobRecord, state: str, code: str | None = None, msg: str | None = None
    ) -> None:
        await self._db(self.store.finish, job.id, state, code, msg)
        self._remove_upload(job)
        if state == "failed":
            log.warning("job %s failed: %s: %s", job.id, code, msg)
        for old in await self._db(self.store.prune, self.state.settings.jobs_kept):
            self._remove_upload(old)

    def _remove_upload(self, job: JobRecord) -> None:
        if job.source == "upload":
            with contextlib.suppress(OSError):
                Path(job.path).unlink()


def new_job_id() -> str:
    return uuid.uuid4().hex
