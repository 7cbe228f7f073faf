"""Embedded ONNX Runtime backend (the default): CUDA provider when available, else CPU."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pemt.config import ModelConfig
from pemt.spec import check_served
from server.backends.base import Backend, BackendError, check_inputs, chunks, concat_outputs
from server.backends.repository import find_onnx, read_pbtxt, resolve_config

__all__ = ["OnnxBackend"]


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, session: Any, cfg: ModelConfig, path: Path, max_batch: int) -> None:
        self._session = session
        self.cfg = cfg
        self.path = path
        self.max_batch = max_batch
        self._outputs = [s.name for s in self.output_specs]
        # one inference at a time: ORT already uses every core inside a run
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pemt-onnx")
        self._closed = False

    @classmethod
    def create(
        cls,
        model_path: Path,
        model_name: str = "pemt",
        *,
        max_batch: int = 8,
        fallback_config: str | None = None,
        threads: int | None = None,
    ) -> OnnxBackend:
        import onnxruntime as ort

        onnx_path = find_onnx(model_path, model_name)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise BackendError(f"ONNX Runtime cannot load {onnx_path}: {e}") from None
        meta = dict(session.get_modelmeta().custom_metadata_map)
        pbtxt = read_pbtxt(onnx_path.parent.parent)
        cfg = resolve_config(onnx_path, meta, pbtxt, fallback_config)
        if pbtxt is not None and pbtxt.max_batch_size > 0:
            max_batch = min(max_batch, pbtxt.max_batch_size)
        backend = cls(session, cfg, onnx_path, max_batch)
        backend._check_graph()
        params = {k: v.string_value for k, v in pbtxt.parameters.items()} if pbtxt else {}
        backend.model_meta, backend.model_file = {**params, **meta}, onnx_path
        return backend

    def _check_graph(self) -> None:
        """The graph's inputs and outputs must match pemt.spec (names, dtypes, shapes)."""
        problems = check_served(
            self.input_specs,
            self.output_specs,
            [(i.name, i.type, i.shape) for i in self._session.get_inputs()],
            [(o.name, o.type, o.shape) for o in self._session.get_outputs()],
            batch_axis=True,
        )
        if problems:
            raise BackendError(
                f"{self.path} does not match pemt.spec for config {self.cfg.name!r}: "
                f"{'; '.join(problems)}; re-export it with export/build_engine.py"
            )

    def embed_sync(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = check_inputs(self.cfg, inputs)
        parts = []
        for chunk in chunks(inputs, n, self.max_batch):
            res = self._session.run(self._outputs, chunk)
            parts.append(dict(zip(self._outputs, res, strict=True)))
        return concat_outputs(parts)

    async def embed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise BackendError("the ONNX backend is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.embed_sync, inputs)

    def ready(self) -> bool:
        return not self._closed

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model_path": str(self.path),
            "config": self.cfg.name,
            "embed_dim": self.cfg.embed_dim,
            "providers": list(self._session.get_providers()),
            "max_batch": self.max_batch,
        }

    async def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
