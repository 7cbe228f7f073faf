"""The FastAPI app. ``create_app(settings=None, backend=None, index=None)`` builds it; nothing
happens at import. For uvicorn: ``uvicorn server.main:create_app --factory`` or
``uvicorn server.main:app`` (``app`` is built on first access).

The lifespan builds the backend, the index and the decode pool (unless passed in), yields them as
typed state, and closes what it built.
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
from server.api.routes import classify, clips, embed, health, metrics, search
from server.backends import Backend, create_backend
from server.core.config import Settings, load_settings
from server.core.decode import DecodePool
from server.core.media import MediaStore
from server.core.metrics import Metrics, MetricsMiddleware
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


def open_index(settings: Settings, dim: int) -> Any:
    from server.index import VectorIndex

    return VectorIndex(settings.data_dir / "index", dim=dim, index_type=settings.index_type)


def clean_media(media: MediaStore, index: Any) -> int:
    """Drop kept files whose clip has no rows (a crash between file and index); see
    server.core.media. Blocking."""
    from server.core.pipeline import clip_of

    n = media.clean(lambda clip: clip_of(index, clip) is not None)
    if n:
        log.info("removed %d media file(s) left without index rows", n)
    return n


def create_app(
    settings: Settings | None = None, backend: Backend | None = None, index: Any | None = None
) -> FastAPI:
    settings = settings or load_settings()
    metrics_ = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        # PEMT_DECODER=nvdec without a GPU stops start-up here, saying what to do
        video_decoder = resolve_decoder(settings.decoder)
        uploads = settings.data_dir / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        for stale in uploads.glob("upload-*.bin"):  # left by a killed process (one per data_dir)
            stale.unlink(missing_ok=True)
        own_backend = backend is None
        be = backend if backend is not None else await create_backend(settings)
        own_index = index is None
        try:
            idx = index if index is not None else open_index(settings, be.cfg.embed_dim)
        except BaseException:
            if own_backend:
                await be.close()
            raise
        decoder = DecodePool(settings.decode_workers, settings.decode_timeout_s)
        media = MediaStore(settings.data_dir / "media")
        state = AppState(
            settings=settings,
            backend=be,
            index=idx,
            decoder=decoder,
            metrics=metrics_,
            media=media,
            video_decoder=video_decoder,
            jobs=JobLimiter(
                settings.max_concurrent_jobs,
                settings.queue_wait_s,
                settings.retry_after_s,
                metrics_,
            ),
        )
        try:
            await state.run_index(clean_media, media, idx)
            await asyncio.to_thread(decoder.warm)
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
    for module in (embed, search, classify, clips, health, metrics):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics_)
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
