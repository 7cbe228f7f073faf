"""NVIDIA Triton backend over gRPC (tritonclient.grpc.aio): async, with timeouts, retries with
backoff while the server is UNAVAILABLE, and a check of the served model against pemt.spec."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np

from pemt.config import ModelConfig
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
        served = {t["name"]: t for t in meta.get("inputs", [])}
        for spec in self.input_specs:
            t = served.get(spec.name)
            if t is None:
                raise BackendError(
                    f"Triton model {self.model_name!r} has no input {spec.name!r} (it has {sorted(served)}); "
                    "re-export the model repository with the current pemt.spec"
                )
            if t["datatype"] != spec.wire_dtype:
                raise BackendError(
                    f"Triton input {spec.name} is {t['datatype']}, pemt.spec says {spec.wire_dtype}"
                )
            dims = [int(d) for d in t["shape"]]
            if batched:
                dims = dims[1:]
            if len(dims) != len(spec.shape) or any(
                g != -1 and w != -1 and g != w for g, w in zip(dims, spec.shape, strict=True)
            ):
                raise BackendError(
                    f"Triton input {spec.name} has shape {t['shape']}, pemt.spec says "
                    f"(batch, *{spec.shape}) for config {self.cfg.name!r}"
                )
        served_out = {t["name"] for t in meta.get("outputs", [])}
        missing = [s.name for s in self.output_specs if s.name not in served_out]
        if missing:
            raise BackendError(f"Triton model {self.model_name!r} lacks outputs {missing}")

    async def _infer(self, chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tritonclient.grpc.aio as grpcclient

        inputs = []
        for spec in self.input_specs:
            arr = np.ascontiguousarray(chunk[spec.name])
            inp = grpcclient.InferInput(spec.name, list(arr.shape), spec.wire_dtype)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [grpcclient.InferRequestedOutput(n) for n in self._outputs]
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
