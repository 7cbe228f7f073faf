"""The FastAPI app. ``create_app(settings=None, backend=None, index=None)`` builds it; nothing
happens at import. For uvicorn: ``uvicorn server.main:create_app --factory`` or
``uvicorn server.main:app`` (``app`` is built on first access).

The lifespan builds the backend, the index and the decode pool (unless passed in), yields them as
typed state, and closes what it built. It refuses to start (``StartupRefused``: one message,
no traceback) on an index that is damaged, lost acknowledged writes, is open elsewhere, or is
missing while kept media exist; it deletes nothing in those cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from pemt.media import resolve_decoder
from server.api.errors import install_error_handlers, install_openapi
from server.api.routes import classify, clips, embed, health, jobs, metrics, put_clip, search
from server.backends import Backend, create_backend
from server.core.config import Settings, load_settings
from server.core.decode import DecodePool
from server.core.identity import check_model, model_identity
from server.core.media import MediaStore
from server.core.metrics import Metrics, MetricsMiddleware
from server.core.startup import RefusedStartMiddleware, StartupRefused
from server.core.state import AppState, JobLimiter

__all__ = ["create_app"]

log = logging.getLogger("pemt.server")

API_DESCRIPTION = """
**Ids.** An id names a stored *item* (one window) or a *clip* (every window of one upload).
A clip of one window is stored under the clip id; a longer one as `{clip}#w{i}` (`#` is `%23`
in a path). Every route takes either: an item id acts on the item, a clip id on the whole clip.

**Errors.** Every error is `{"error": {"code": "...", "message": "..."}}`: 400 the request is
wrong (the code names the field: `invalid_id`, `invalid_metadata`, ...), 401 API key, 404 no
such id, 408 the body came too slowly, 413 over a limit, 415 not a content type or media
container the route takes, 422 the content cannot be used (a damaged video), 429 busy and 503
unavailable (both with `Retry-After`), 507 the data directory is full. JSON bodies and
multipart forms get the same answer for the same mistake.
"""


def open_index(settings: Settings, dim: int, kept_media: int = 0) -> Any:
    """The service's index (``PEMT_INDEX_BACKEND``), verified. With ``kept_media`` files in the
    media folder it must already exist: a new, empty index beside them would make every one an
    orphan. Raises ``StartupRefused`` saying what to do."""
    from server.index import (
        IndexDamagedError,
        IndexLockedError,
        IndexMissingError,
        IndexUnavailableError,
        VectorIndex,
    )

    create = kept_media == 0
    try:
        if settings.index_backend == "milvus":
            from server.index.milvus import MilvusIndex

            where = f"Milvus collection {settings.milvus_collection!r} at {settings.milvus_uri}"
            return MilvusIndex(
                settings.milvus_uri,
                settings.milvus_collection,
                dim,
                thumbnails=settings.media_path / ".thumbnails",
                token=settings.milvus_token,
                db_name=settings.milvus_db,
                index_type=settings.milvus_index_type,
                index_params=settings.milvus_index_params,
                search_params=settings.milvus_search_params,
                timeout_s=settings.milvus_timeout_s,
                create=create,
            )
        where = str(settings.data_dir / "index")
        return VectorIndex(
            settings.data_dir / "index", dim=dim, index_type=settings.index_type, create=create
        )
    except IndexMissingError as exc:
        restore = (
            "Restore the collection from a Milvus backup (milvus-backup), or point "
            "PEMT_MILVUS_URI / PEMT_MILVUS_COLLECTION at it"
            if settings.index_backend == "milvus"
            else f"Restore the index from a backup (`pemt-server index restore BACKUP "
            f"{settings.data_dir}`), or put the index back"
        )
        raise StartupRefused(
            f"{exc}, but {settings.media_path} holds {kept_media} kept videos: the index "
            f"({where}) was lost or moved, and a new, empty one would make them all orphans. "
            f"Nothing was changed or deleted. {restore}; to start with an empty index "
            f"instead, move {settings.media_path} elsewhere first."
        ) from None
    except (IndexDamagedError, IndexLockedError, IndexUnavailableError, ValueError) as exc:
        raise StartupRefused(str(exc)) from None


def index_name(settings: Settings) -> str:
    if settings.index_backend == "milvus":
        return f"the Milvus collection {settings.milvus_collection!r} at {settings.milvus_uri}"
    return f"the index in {settings.data_dir / 'index'}"


def clean_media(media: MediaStore, index: Any) -> int:
    """Drop staged files and kept files whose clip has no rows (a crash between file and
    index); in a shared media folder (replicas) staged files only. See server.core.media.
    Each removal is logged. Blocking."""
    from server.core.pipeline import clip_of

    n = media.clean(None if media.shared else lambda clip: clip_of(index, clip) is not None)
    if n:
        log.warning("removed %d media file(s) left without index rows", n)
    return n


class ModelVersionHeader:
    """Pure ASGI: every HTTP response carries ``X-PEMT-Model-Version`` (the served model's
    version) once the service has started, so a client can tell which embedding space
    answered."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state = (scope.get("state") or {}).get("pemt") if scope["type"] == "http" else None
        if state is None:
            await self.app(scope, receive, send)
            return
        version = state.model.version.encode("latin-1", "replace")

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-pemt-model-version", version)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, _send)


async def start_jobs(state: AppState) -> Any:
    """The background job runner (server.core.jobs) on ``data_dir/jobs.sqlite``: jobs a
    stopped process left running resume now."""
    from server.core.jobs import DB_NAME, JobRunner, JobStore

    data = state.settings.data_dir
    store = await asyncio.to_thread(JobStore, data / DB_NAME)
    runner = JobRunner(state, store, data / "jobs")
    state.job_runner = runner
    await runner.start()
    return runner


def create_app(
    settings: Settings | None = None, backend: Backend | None = None, index: Any | None = None
) -> FastAPI:
    settings = settings or load_settings()
    metrics_ = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        # PEMT_DECODER=nvdec without a GPU stops start-up here, saying what to do
        video_decoder = resolve_decoder(settings.decoder)
        media = MediaStore(settings.media_path, shared=settings.index_backend == "milvus")
        own_backend = backend is None
        be = backend if backend is not None else await create_backend(settings)
        own_index = index is None
        idx: Any = index
        try:
            if idx is None:
                idx = open_index(settings, be.cfg.embed_dim, len(media.kept()))
            identity = model_identity(be)  # refuse an index another model wrote
            await asyncio.to_thread(check_model, idx, identity, index_name(settings))
        except BaseException:
            if own_index and idx is not None:
                idx.close()
            if own_backend:
                await be.close()
            raise
        # only now that the index opened verified does start-up remove anything
        uploads = settings.data_dir / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        stale = sorted(uploads.glob("upload-*.bin"))  # left by a killed process (one per data_dir)
        if stale:
            log.warning(
                "removing %d partial upload(s) in %s (never acknowledged)", len(stale), uploads
            )
        for path in stale:
            path.unlink(missing_ok=True)
        decoder = DecodePool(settings.decode_workers, settings.decode_timeout_s)
        state = AppState(
            settings=settings,
            backend=be,
            index=idx,
            decoder=decoder,
            metrics=metrics_,
            media=media,
            video_decoder=video_decoder,
            model=identity,
            jobs=JobLimiter(
                settings.max_concurrent_jobs,
                settings.queue_wait_s,
                settings.retry_after_s,
                metrics_,
            ),
        )
        runner = None
        try:
            await state.run_index(clean_media, media, idx)
            await asyncio.to_thread(decoder.warm)
            runner = await start_jobs(state)
            state.started = True
            log.info(
                "pemt server ready: backend=%s config=%s data_dir=%s",
                be.name,
                be.cfg.name,
                settings.data_dir,
            )
            yield {"pemt": state}
        finally:
            state.started = False
            if runner is not None:
                await runner.close()  # a running job stays running and resumes at next start
            decoder.close()
            if own_index and hasattr(idx, "close"):
                await state.run_index(idx.close)
            state.index_pool.shutdown(wait=True)
            if own_backend:
                await be.close()

    app = FastAPI(
        title="PEMT",
        version="0.1.0",
        summary="Audio-visual video embeddings: embed, search, classify.",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics_
    install_error_handlers(app)
    install_openapi(app)
    for module in (embed, jobs, search, classify, clips, put_clip, health, metrics):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics_)
    app.add_middleware(ModelVersionHeader)
    app.add_middleware(RefusedStartMiddleware)
    static = Path(__file__).parent / "static"
    if static.is_dir() and any(static.iterdir()):
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=static, html=True), name="static")
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn server.main:app`: build the app on first access, not at import
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
