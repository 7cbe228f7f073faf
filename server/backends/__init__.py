"""Model backends: embedded ONNX Runtime (default) or NVIDIA Triton over gRPC."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.backends.base import Backend, BackendError

if TYPE_CHECKING:
    from server.core.config import Settings

__all__ = ["Backend", "BackendError", "create_backend"]


async def create_backend(settings: Settings) -> Backend:
    if settings.backend == "triton":
        from server.backends.triton import TritonBackend

        return await TritonBackend.create(
            settings.triton_url,
            settings.model_name,
            max_batch=settings.max_batch,
            fallback_config=settings.config_name,
            timeout_s=settings.triton_timeout_s,
            retries=settings.triton_retries,
        )
    from server.backends.onnx import OnnxBackend

    return OnnxBackend.create(
        settings.model_path,
        settings.model_name,
        max_batch=settings.max_batch,
        fallback_config=settings.config_name,
    )
