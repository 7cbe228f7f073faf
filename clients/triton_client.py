"""Call Triton directly: decode and preprocess here with pemt.media, send windows over gRPC.

    from clients.triton_client import TritonEmbedder
    with TritonEmbedder("127.0.0.1:8001", model_name="pemt", config="tiny") as emb:
        for window, out in emb.embed_file("clip.mp4"):
            print(window.start, out["embedding"].shape)

``AsyncTritonEmbedder.stream_file`` does the same over one bidirectional gRPC stream
(``tritonclient.grpc.aio``): windows go out as they are decoded, results come back in order.
On start, the served model's inputs and outputs are checked against :mod:`pemt.spec`
(``pemt.spec.check_served``); requests are built by ``pemt.spec.triton_request``.
The model config comes from the served model (a ``pemt.config`` parameter in config.pbtxt) or
``config`` (a variant name, JSON path or ModelConfig).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pemt.config import ModelConfig, load_config
from pemt.spec import TensorSpec, check_served, model_inputs, model_outputs, triton_request

__all__ = ["AsyncTritonEmbedder", "TritonEmbedder", "TritonModelError", "check_served_model"]


class TritonModelError(RuntimeError):
    """The served model does not match pemt.spec, or no config could be determined."""


def _resolve_config(
    config: ModelConfig | str | Path | None, model_config: dict[str, Any]
) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    if config is not None:
        return load_config(config)
    params = model_config.get("parameters") or {}
    for key in ("pemt.config", "pemt_config", "config"):
        if key in params:
            return ModelConfig.from_dict(json.loads(params[key]["string_value"]))
    raise TritonModelError(
        f"model {model_config.get('name')!r} does not carry a 'pemt.config' parameter; pass "
        "config='tiny'|'small'|'paper' (or a JSON path) matching the export"
    )


def check_served_model(
    cfg: ModelConfig, metadata: dict[str, Any], model_config: dict[str, Any]
) -> None:
    """Raise TritonModelError unless the served tensors match pemt.spec for ``cfg``."""
    problems = check_served(
        model_inputs(cfg),
        model_outputs(cfg),
        [(t["name"], t["datatype"], t["shape"]) for t in metadata.get("inputs", [])],
        [(t["name"], t["datatype"], t["shape"]) for t in metadata.get("outputs", [])],
        batch_axis=int(model_config.get("max_batch_size", 0) or 0) > 0,
    )
    if problems:
        raise TritonModelError(
            f"served model {model_config.get('name')!r} does not match pemt.spec for config "
            f"{cfg.name!r}: {'; '.join(problems)}; pass the config it was exported with"
        )


def _batch_size(specs: list[TensorSpec], inputs: dict[str, np.ndarray]) -> int:
    for s in specs:
        if s.name not in inputs:
            raise ValueError(f"missing input {s.name!r}; inputs are {[x.name for x in specs]}")
    sizes = {len(inputs[s.name]) for s in specs}
    if len(sizes) != 1:
        raise ValueError(f"all inputs need the same batch size, got {sorted(sizes)}")
    return sizes.pop()


def _window_batch(window: Any) -> dict[str, np.ndarray]:
    return {
        "frames": window.frames[None],
        "audio": window.audio[None],
        "visual_mask": window.visual_mask[None],
        "audio_mask": window.audio_mask[None],
    }


class TritonEmbedder:
    """Synchronous gRPC client (tritonclient.grpc)."""

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model_name: str = "pemt",
        *,
        config: ModelConfig | str | Path | None = None,
        timeout_s: float = 60.0,
        max_batch: int | None = None,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.url, self.model_name, self.timeout_s = url, model_name, timeout_s
        self._client = grpcclient.InferenceServerClient(url=url)
        try:
            mc = self._client.get_model_config(model_name, as_json=True, client_timeout=timeout_s)[
                "config"
            ]
            meta = self._client.get_model_metadata(
                model_name, as_json=True, client_timeout=timeout_s
            )
            self.cfg = _resolve_config(config, mc)
            check_served_model(self.cfg, meta, mc)
        except BaseException:
            self._client.close()
            raise
        served_max = int(mc.get("max_batch_size", 0) or 0)
        self.max_batch = min(max_batch or served_max or 8, served_max or 1 << 30)
        self._inputs = model_inputs(self.cfg)
        self._output_specs = model_outputs(self.cfg)
        self._outputs = [s.name for s in self._output_specs]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model inputs (batch first, pemt.spec) -> outputs; splits into chunks of max_batch."""
        requests = [
            triton_request(
                self._grpc,
                self._inputs,
                {k: v[i : i + self.max_batch] for k, v in inputs.items()},
                self._output_specs,
            )
            for i in range(0, _batch_size(self._inputs, inputs), self.max_batch)
        ]  # all built (and checked against pemt.spec) before the first is sent
        parts = []
        for reqs, outs in requests:
            res = self._client.infer(
                self.model_name, reqs, outputs=outs, client_timeout=self.timeout_s
            )
            parts.append({n: res.as_numpy(n) for n in self._outputs})
        return {k: np.concatenate([p[k] for p in parts]) for k in self._outputs}

    def embed_file(
        self, path: str | Path, *, stride_s: float | None = None, batch: int = 4
    ) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
        """Decode ``path`` here and yield (window, outputs for that window) in order."""
        from pemt.media import iter_windows

        pending: list[Any] = []
        for w in iter_windows(path, self.cfg.media, stride_s=stride_s):
            pending.append(w)
            if len(pending) == batch:
                yield from self._flush(pending)
                pending = []
        if pending:
            yield from self._flush(pending)

    def _flush(self, windows: list[Any]) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
        batch = {
            k: np.concatenate([_window_batch(w)[k] for w in windows])
            for k in ("frames", "audio", "visual_mask", "audio_mask")
        }
        out = self.infer(batch)
        for i, w in enumerate(windows):
            yield w, {k: v[i] for k, v in out.items()}

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTritonEmbedder:
    """Async gRPC client (tritonclient.grpc.aio) with bidirectional streaming. Use ``create``."""

    def __init__(
        self, client: Any, url: str, model_name: str, cfg: ModelConfig, timeout_s: float
    ) -> None:
        self._client, self.url, self.model_name, self.cfg = client, url, model_name, cfg
        self.timeout_s = timeout_s
        self._inputs = model_inputs(cfg)
        self._output_specs = model_outputs(cfg)
        self._outputs = [s.name for s in self._output_specs]

    @classmethod
    async def create(
        cls,
        url: str = "127.0.0.1:8001",
        model_name: str = "pemt",
        *,
        config: ModelConfig | str | Path | None = None,
        timeout_s: float = 60.0,
    ) -> AsyncTritonEmbedder:
        import tritonclient.grpc.aio as aio

        client = aio.InferenceServerClient(url=url)
        try:
            mc = (
                await client.get_model_config(model_name, as_json=True, client_timeout=timeout_s)
            )["config"]
            meta = await client.get_model_metadata(
                model_name, as_json=True, client_timeout=timeout_s
            )
            cfg = _resolve_config(config, mc)
            check_served_model(cfg, meta, mc)
        except BaseException:
            await client.close()
            raise
        return cls(client, url, model_name, cfg, timeout_s)

    def _request(self, inputs: dict[str, np.ndarray], request_id: str) -> dict[str, Any]:
        import tritonclient.grpc.aio as aio

        _batch_size(self._inputs, inputs)
        reqs, outs = triton_request(aio, self._inputs, inputs, self._output_specs)
        return {
            "model_name": self.model_name,
            "inputs": reqs,
            "outputs": outs,
            "request_id": request_id,
        }

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req = self._request(inputs, "0")
        res = await self._client.infer(
            req["model_name"], req["inputs"], outputs=req["outputs"], client_timeout=self.timeout_s
        )
        return {n: res.as_numpy(n) for n in self._outputs}

    async def stream(
        self, batches: Iterable[dict[str, np.ndarray]]
    ) -> AsyncIterator[dict[str, np.ndarray]]:
        """Send every batch over one gRPC stream; yield outputs in the order sent."""
        # all built (and checked against pemt.spec) before the stream opens
        items = [self._request(b, str(i)) for i, b in enumerate(batches)]

        async def requests() -> AsyncIterator[dict[str, Any]]:
            for item in items:
                yield item

        got: dict[int, dict[str, np.ndarray]] = {}
        nxt = 0
        async for result, error in self._client.stream_infer(
            requests(), stream_timeout=self.timeout_s
        ):
            if error is not None:
                raise RuntimeError(f"Triton stream error: {error}")
            rid = int(result.get_response().id)
            got[rid] = {n: result.as_numpy(n) for n in self._outputs}
            while nxt in got:
                yield got.pop(nxt)
                nxt += 1
            if nxt == len(items):
                break

    async def stream_file(
        self, path: str | Path, *, stride_s: float | None = None
    ) -> AsyncIterator[tuple[Any, dict[str, np.ndarray]]]:
        """Decode ``path`` here (in a thread), stream one request per window, yield in order."""
        from pemt.media import load_windows

        windows = await asyncio.to_thread(load_windows, path, self.cfg.media, stride_s=stride_s)
        i = 0
        async for out in self.stream(_window_batch(w) for w in windows):
            yield windows[i], {k: v[0] for k, v in out.items()}
            i += 1

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncTritonEmbedder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m clients.triton_client FILE... --url HOST:8001``: decode each file here, send
    its windows to Triton, print each window's span and embedding, then the files' cosine
    similarities (the mean of each file's window embeddings, normalized)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m clients.triton_client", description=main.__doc__)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC host:port")
    ap.add_argument("--model", default="pemt", help="served model name")
    ap.add_argument("--config", default=None, help="variant or JSON, if the model lacks one")
    ap.add_argument("--stride", type=float, default=None, help="seconds between windows")
    ap.add_argument("--values", type=int, default=4, help="embedding values to print")
    args = ap.parse_args(argv)
    means: dict[str, np.ndarray] = {}
    try:
        with TritonEmbedder(args.url, args.model, config=args.config) as emb:
            print(
                f"model {args.model!r} at {args.url}: config {emb.cfg.name}, {emb.cfg.embed_dim}-d"
            )
            for path in args.files:
                vecs = []
                for w, out in emb.embed_file(path, stride_s=args.stride):
                    e = out["embedding"]
                    vecs.append(e)
                    head = ", ".join(f"{v:+.4f}" for v in e[: args.values])
                    print(
                        f"{path.name}  [{w.start:6.2f}, {w.end:6.2f}] s  |e|={np.linalg.norm(e):.4f}  [{head}, ...]"
                    )
                m = np.mean(vecs, axis=0)
                means[str(path)] = m / max(float(np.linalg.norm(m)), 1e-12)
    except (OSError, ValueError, TritonModelError) as e:
        print(f"triton_client: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # tritonclient's InferenceServerException: unreachable, no model
        print(f"triton_client: error: Triton at {args.url}: {e}", file=sys.stderr)
        return 3
    names = list(means)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            print(f"cosine {Path(a).name} ~ {Path(b).name}: {float(means[a] @ means[b]):+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
