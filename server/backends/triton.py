"""NVIDIA Triton backend over gRPC (tritonclient.grpc.aio): async, with timeouts, retries with
backoff while the server is UNAVAILABLE, and a check of the served model against pemt.spec
(``pemt.spec.check_served``; requests are built by ``pemt.spec.triton_request``)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np

from pemt.config import ModelConfig
from pemt.spec import check_served, triton_request
from server.backends.base import Backend, BackendError, check_inputs, chunks, concat_outputs
from server.backends.repository import resolve_config

__all__ = ["TritonBackend"]

log = logging.getLogger("pemt.server.triton")

_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


def _retryable(e: Exception) -> bool:
    status = str(getattr(e, "status", lambda: "")() or "")
    return any(s in status for s in _RETRYABLE)


class TritonBackend(Backend):
    name = "triton"

    def __init__(
        self,
        client: Any,
        url: str,
        model_name: str,
        cfg: ModelConfig,
        max_batch: int,
        timeout_s: float,
        retries: int,
    ) -> None:
        self._client = client
        self.url = url
        self.model_name = model_name
        self.cfg = cfg
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.retries = retries
        self._ready = True
        self._outputs = [s.name for s in self.output_specs]

    @classmethod
    async def create(
        cls,
        url: str,
        model_name: str = "pemt",
        *,
        max_batch: int = 8,
        fallback_config: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        startup_wait_s: float = 30.0,
    ) -> TritonBackend:
        import tritonclient.grpc.aio as grpcclient

        client = grpcclient.InferenceServerClient(url=url)
        try:
            await cls._wait_ready(client, url, model_name, startup_wait_s)
            config = (
                await client.get_model_config(model_name, as_json=True, client_timeout=timeout_s)
            )["config"]
            meta = await client.get_model_metadata(
                model_name, as_json=True, client_timeout=timeout_s
            )
            params = {
                k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()
            }
            cfg = resolve_config(None, params, None, fallback_config)
            served_max = int(config.get("max_batch_size", 0) or 0)
            if served_max > 0:
                max_batch = min(max_batch, served_max)
            backend = cls(client, url, model_name, cfg, max_batch, timeout_s, retries)
            backend._check_metadata(meta, batched=served_max > 0)
            backend.model_meta = params
            return backend
        except BaseException:
            await client.close()
            raise

    @staticmethod
    async def _wait_ready(client: Any, url: str, model_name: str, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = 0.2
        last: str = ""
        while True:
            try:
                if await client.is_model_ready(model_name, client_timeout=5.0):
                    return
                last = f"model {model_name!r} is not ready"
            except Exception as e:  # tritonclient raises InferenceServerException for all
                last = str(e).splitlines()[0] if str(e) else type(e).__name__
            if loop.time() >= deadline:
                raise BackendError(
                    f"Triton at {url} did not serve model {model_name!r} within {wait_s:.0f} s ({last}); "
                    "start tritonserver with the model repository, or check PEMT_TRITON_URL / PEMT_MODEL_NAME"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _check_metadata(self, meta: dict[str, Any], batched: bool) -> None:
        problems = check_served(
            self.input_specs,
            self.output_specs,
            [(t["name"], t["datatype"], t["shape"]) for t in meta.get("inputs", [])],
            [(t["name"], t["datatype"], t["shape"]) for t in meta.get("outputs", [])],
            batch_axis=batched,
        )
        if problems:
            raise BackendError(
                f"Triton model {self.model_name!r} at {self.url} does not match pemt.spec for "
                f"config {self.cfg.name!r}: {'; '.join(problems)}; re-export the model "
                "repository with export/build_engine.py, or check PEMT_MODEL_NAME"
            )

    async def _infer(self, chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tritonclient.grpc.aio as grpcclient

        inputs, outputs = triton_request(grpcclient, self.input_specs, chunk, self.output_specs)
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                res = await self._client.infer(
                    self.model_name, inputs, outputs=outputs, client_timeout=self.timeout_s
                )
                return {n: res.as_numpy(n) for n in self._outputs}
            except Exception as e:
                if attempt >= self.retries or not _retryable(e):
                    self._ready = not _retryable(e)
                    raise BackendError(f"Triton inference on {self.url} failed: {e}") from None
                log.warning("Triton %s (attempt %d), retrying in %.1f s", e, attempt + 1, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def embed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = check_inputs(self.cfg, inputs)
        parts = [await self._infer(c) for c in chunks(inputs, n, self.max_batch)]
        self._ready = True
        return concat_outputs(parts)

    async def check_ready(self) -> bool:
        try:
            self._ready = bool(
                await self._client.is_model_ready(self.model_name, client_timeout=2.0)
            )
        except Exception:
            self._ready = False
        return self._ready

    def ready(self) -> bool:
        return self._ready

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "url": self.url,
            "model_name": self.model_name,
            "config": self.cfg.name,
            "embed_dim": self.cfg.embed_dim,
            "max_batch": self.max_batch,
            "model_config": json.loads(self.cfg.to_json()),
        }

    async def close(self) -> None:
        self._ready = False
        await self._client.close()
