"""The two Ray stages of the bulk indexer: decoding (a task per file) and the model (actors).

Both run in Ray worker processes and import what they need there. Every row has one schema
(Ray Data stacks rows into Arrow blocks): a window's model inputs at the model's shape plus
``key``, ``window``, times, modality flags and the JPEG thumbnail; the last row of a file
carries ``last``, ``count`` (windows in the file) and ``decode_s``; a file that failed ends
with a row whose ``error`` is set (``window`` -1 and zero inputs when it failed before its
first window). The model stage embeds the real rows and passes the others through.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["ModelStage", "decode_rows"]

OUTPUTS = {"fused": "embedding", "audio": "audio_embedding", "visual": "visual_embedding"}


def _media(model_config: dict[str, Any]) -> Any:
    from pemt.config import ModelConfig

    return ModelConfig.from_dict(model_config).media


def decode_rows(
    item: dict[str, Any],
    *,
    model_config: dict[str, Any],
    stride_s: float | None,
    limits: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """Decode one file with the service's own decode function (``server.core.decode``: the
    same windows, limits and thumbnails as an upload), one row per window, the last marked."""
    from pemt.media import MediaError, resolve_decoder
    from pemt.spec import window_inputs
    from server.core.decode import DecodeRequest, WindowLimitError, iter_decoded

    media = _media(model_config)
    specs = window_inputs(media)
    given = {**limits, "decoder": resolve_decoder(limits.get("decoder", "cpu"))}
    req = DecodeRequest(path=item["path"], media=media, stride_s=stride_s, **given)
    base = {"key": item["key"], "last": False, "count": 0, "error_code": "", "error": "",
            "decode_s": 0.0}  # fmt: skip
    spent = 0.0
    held: dict[str, Any] | None = None  # one row held back, so the last can be marked
    count = 0
    it = iter_decoded(req)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                info, arrays, thumb = next(it)
            except StopIteration:
                break
            finally:
                spent += time.perf_counter() - t0
            if held is not None:
                yield held
            count += 1
            held = {
                **base, "window": info.index, "start": info.start, "end": info.end,
                "has_audio": info.has_audio, "has_video": info.has_video,
                "thumbnail": thumb or b"", **arrays,
            }  # fmt: skip
    except (MediaError, WindowLimitError) as e:
        code, msg = str(getattr(e, "code", "corrupt")), str(e)
    except Exception as e:  # noqa: BLE001 - a decoder failure on this file, not the job's
        code, msg = "corrupt", f"the file could not be decoded ({type(e).__name__}: {e})"
    else:
        code, msg = "", ""
    if held is None or code:  # no window, or a failure: an error row closes the file
        if held is not None:
            yield held  # counted below; the driver drops the file's windows on the error
        zeros = {s.name: np.zeros(s.shape, s.np_dtype) for s in specs}
        yield {
            **base, "window": -1, "start": 0.0, "end": 0.0, "has_audio": False,
            "has_video": False, "thumbnail": b"", **zeros, "last": True, "count": count,
            "error_code": code or "empty", "error": msg or "the file gave no windows",
            "decode_s": spent,
        }  # fmt: skip
        return
    yield {**held, "last": True, "count": count, "decode_s": spent}


class ModelStage:
    """One model per actor: the service's own backend classes (``server.backends``), so the
    vectors, and the model identity sent with them, are what the service would compute.
    ``triton_url`` set: Triton over gRPC; else ONNX Runtime on ``model_path``."""

    def __init__(
        self,
        model_path: str | None,
        model_name: str,
        triton_url: str | None,
        max_batch: int,
        threads: int | None,
    ) -> None:
        import asyncio

        from server.core.identity import model_identity

        self._loop = asyncio.new_event_loop()
        if triton_url:
            from server.backends.triton import TritonBackend

            self.backend: Any = self._loop.run_until_complete(
                TritonBackend.create(triton_url, model_name, max_batch=max_batch)
            )
        else:
            from pathlib import Path

            from server.backends.onnx import OnnxBackend

            assert model_path is not None
            self.backend = OnnxBackend.create(
                Path(model_path), model_name, max_batch=max_batch, threads=threads
            )
        self.identity = json.dumps(model_identity(self.backend).to_dict(), sort_keys=True)
        self.inputs = [s.name for s in self.backend.input_specs]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        real = np.asarray(batch["window"]) >= 0
        n, d = len(real), self.backend.cfg.embed_dim
        vectors = {m: np.zeros((n, d), np.float32) for m in OUTPUTS}
        if real.any():
            inputs = {k: np.ascontiguousarray(batch[k][real]) for k in self.inputs}
            out = self._loop.run_until_complete(self.backend.embed(inputs))
            for m, name in OUTPUTS.items():
                vectors[m][real] = np.asarray(out[name], np.float32)
        result = {k: v for k, v in batch.items() if k not in self.inputs}
        result.update({f"vec_{m}": v for m, v in vectors.items()})
        result["model"] = np.array([self.identity] * n, dtype=object)
        result["model_s"] = np.full(n, (time.perf_counter() - t0) / max(n, 1))
        return result
