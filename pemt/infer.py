"""Pipelined embedding of many files: decoders fill a bounded queue of windows while the model
runs on full batches (imports torch).

    files -> [NVDEC threads | PyAV threads | PyAV processes] -> queue (<= queue_windows)
          -> batches of ``batch_size`` windows -> model -> results, in input order

Decoders pull files from one shared list, so CPU and GPU decoders run together and a fast one
takes more files. Decoding of the next files overlaps the model on the current batch: the
decoders only wait when the queue is full. A file that fails to decode fails alone (its
result carries the error code and message; files before and after it are embedded). A model
failure is not a file's fault and is raised.

The model step is :class:`ModelRunner`: eval mode, optional bf16 autocast, channels-last
(3-D) CNN weights, cuDNN autotuning, ``torch.compile`` and CUDA-graph replay (a static
batch: the last batch is padded with masked rows, so shapes never change).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pemt.media import (
    DecodeLimits,
    MediaError,
    Window,
    iter_windows,
    load_windows,
    resolve_decoder,
)

__all__ = ["DecodePlan", "FileResult", "ModelRunner", "embed_files"]

OUTPUTS = ("embedding", "audio_embedding", "visual_embedding")


@dataclass(frozen=True)
class DecodePlan:
    """How many decoders of each kind: NVDEC threads in this process (their frames stay on
    the GPU), PyAV threads, and PyAV child processes (for many CPU cores: no GIL)."""

    nvdec_threads: int = 0
    cpu_threads: int = 0
    cpu_processes: int = 0

    def __post_init__(self) -> None:
        if min(self.nvdec_threads, self.cpu_threads, self.cpu_processes) < 0:
            raise ValueError(f"decoder counts must be >= 0, got {self}")
        if self.nvdec_threads + self.cpu_threads + self.cpu_processes == 0:
            raise ValueError("a DecodePlan needs at least one decoder")

    @classmethod
    def default(cls, decoder: str | None = None) -> DecodePlan:
        """NVDEC where ``decoder`` resolves to it (4 decoders, plus PyAV on half the cores),
        else PyAV in one process per core (threads on machines of up to 2 cores)."""
        cores = os.cpu_count() or 1
        if resolve_decoder(decoder) == "nvdec":
            return cls(nvdec_threads=4, cpu_processes=cores // 2)
        if cores <= 2:
            return cls(cpu_threads=cores)
        return cls(cpu_processes=cores)


@dataclass
class FileResult:
    """One input file: its windows' times and vectors (``vectors[name]`` is (W, D) for each of
    ``OUTPUTS``), or the error that stopped it (``error`` = a MediaError code or
    ``"error"``)."""

    index: int
    path: str
    windows: list[dict[str, Any]] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    message: str = ""
    decoder: str = ""
    decode_s: float = 0.0
    model_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


# --- the model step -----------------------------------------------------------------------


class ModelRunner:
    """``runner(batch) -> {output: (B, D) float32 numpy}`` for batches of model inputs.

    ``precision``: ``fp32`` or ``bf16`` (autocast). ``compile``: ``torch.compile`` the model
    (``mode`` as torch takes it, e.g. ``max-autotune``). ``cuda_graph``: capture one replayable
    graph per batch size (CUDA only). ``static_batch``: pad every batch to ``batch_size`` rows
    (masked) so compiled and captured shapes never change.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        *,
        batch_size: int = 8,
        precision: str = "fp32",
        channels_last: bool = True,
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
        static_batch: bool | None = None,
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={precision!r} is not 'fp32' or 'bf16'")
        self.device = torch.device(device)
        if cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph needs a CUDA device")
        self.batch_size = batch_size
        self.precision = precision
        self.model = model.eval().to(self.device)
        if channels_last:
            to_channels_last(self.model)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.static = static_batch if static_batch is not None else (compile or cuda_graph)
        self.fn: Callable[..., Any] = self.model
        if compile:
            self.fn = torch.compile(self.model, mode=compile_mode, dynamic=False)
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}

    def _autocast(self, cache: bool = True) -> Any:
        return torch.autocast(
            self.device.type,
            dtype=torch.bfloat16,
            enabled=self.precision == "bf16",
            cache_enabled=cache,
        )

    def _forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), self._autocast(cache=not self.cuda_graph):
            out = self.fn(**inputs)
        return {k: out[k] for k in OUTPUTS}

    def _replay(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b = inputs["frames"].shape[0]
        if b not in self._graphs:
            static = {k: v.clone() for k, v in inputs.items()}
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm up (cuDNN autotuning, lazy init) before capture
                    self._forward(static)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outs = self._forward(static)
            self._graphs[b] = (graph, static, outs)
        graph, static, outs = self._graphs[b]
        for k, v in inputs.items():
            static[k].copy_(v)
        graph.replay()
        return outs

    def rows_for(self, n: int) -> int:
        """Rows a batch of ``n`` windows runs with: ``n``, or with a static batch the next
        power of two up to ``batch_size`` (few shapes to compile or capture)."""
        if not self.static:
            return n
        rows = 1
        while rows < n:
            rows *= 2
        return min(max(rows, n), max(self.batch_size, n))

    def to_device(self, windows: Sequence[Window]) -> dict[str, torch.Tensor]:
        """Model inputs for ``windows`` on the device; padding rows (static batches) are zeros
        with every segment masked."""
        pad = self.rows_for(len(windows)) - len(windows)
        out: dict[str, torch.Tensor] = {}
        for name in ("frames", "audio", "visual_mask", "audio_mask"):
            x = torch.stack([_as_tensor(getattr(w, name), self.device) for w in windows])
            if pad:
                x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
            out[name] = x
        return out

    def __call__(self, windows: Sequence[Window]) -> dict[str, np.ndarray]:
        inputs = self.to_device(windows)
        outs = self._replay(inputs) if self.cuda_graph else self._forward(inputs)
        return {k: v[: len(windows)].float().cpu().numpy() for k, v in outs.items()}


def to_channels_last(model: torch.nn.Module) -> None:
    """3-D convolutions in NDHWC (``channels_last_3d``), 2-D ones in NHWC: the frames arrive as
    (N, F, S, S, 3), already channels-last, so cuDNN needs no transposes."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
            elif isinstance(m, torch.nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)


def _as_tensor(x: Any, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    t = torch.from_numpy(np.ascontiguousarray(x))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


# --- decoding workers -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    media: Any  # MediaConfig
    stride_s: float | None
    limits: DecodeLimits | None


def _failure(e: BaseException) -> tuple[str, str]:
    if isinstance(e, MediaError):
        return e.code, str(e)
    return "error", f"{type(e).__name__}: {e}"


class _Decoders:
    """Worker threads pulling file indices from one list and putting ``("window", i, w)`` and
    ``("end", i, error, info)`` on ``out`` (bounded: a full queue pauses the decoders)."""

    def __init__(
        self, paths: Sequence[str], job: _Job, plan: DecodePlan, out: queue.Queue[Any]
    ) -> None:
        self.paths, self.job, self.out = paths, job, out
        self.todo: queue.Queue[int] = queue.Queue()
        for i in range(len(paths)):
            self.todo.put(i)
        self.stop = threading.Event()
        self.pool: ProcessPoolExecutor | None = None
        if plan.cpu_processes:
            ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods()
                                 else "spawn")  # fmt: skip
            self.pool = ProcessPoolExecutor(plan.cpu_processes, mp_context=ctx)
        kinds = (
            [("nvdec", False)] * plan.nvdec_threads
            + [("cpu", False)] * plan.cpu_threads
            + [("cpu", True)] * plan.cpu_processes
        )
        self.threads = [
            threading.Thread(target=self._work, args=(kind, proc), daemon=True, name=f"decode-{kind}")
            for kind, proc in kinds
        ]  # fmt: skip
        for t in self.threads:
            t.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, kind: str, in_process: bool) -> None:
        while not self.stop.is_set():
            try:
                i = self.todo.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            error, used = None, kind
            try:
                if in_process and self.pool is not None:
                    fut: Future[list[Window]] = self.pool.submit(
                        load_windows,  # torch-free: the child imports only pemt.media
                        self.paths[i],
                        self.job.media,
                        stride_s=self.job.stride_s,
                        limits=self.job.limits,
                        decoder=kind,
                    )
                    windows: Iterator[Window] = iter(fut.result())
                else:
                    windows = iter_windows(
                        self.paths[i],
                        self.job.media,
                        stride_s=self.job.stride_s,
                        limits=self.job.limits,
                        decoder=kind,
                        device_frames=kind == "nvdec",
                    )
                for w in windows:
                    used = w.decoder
                    if not self._put(("window", i, w)):
                        return
            except Exception as e:  # noqa: BLE001 - one file's failure is that file's result
                error = _failure(e)
            self._put(("end", i, error, {"decoder": used, "decode_s": time.perf_counter() - t0}))

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


# --- the pipeline -----------------------------------------------------------------------------


def embed_files(
    runner: ModelRunner,
    files: Sequence[str | Path],
    media: Any,
    *,
    plan: DecodePlan | None = None,
    stride_s: float | None = None,
    limits: DecodeLimits | None = None,
    queue_windows: int = 64,
    max_wait_s: float = 2.0,
) -> Iterator[FileResult]:
    """Embed ``files`` (windows of ``media``, a MediaConfig) with ``runner``; yields one
    :class:`FileResult` per file, in input order. A batch runs as soon as ``runner.batch_size``
    windows are queued, when every file is decoded, or when the oldest queued window has
    waited ``max_wait_s`` (a bound on latency when decoders are slower than the model)."""
    paths = [os.fspath(f) for f in files]
    results = [FileResult(i, p) for i, p in enumerate(paths)]
    out: queue.Queue[Any] = queue.Queue(maxsize=max(queue_windows, runner.batch_size))
    decoders = _Decoders(paths, _Job(media, stride_s, limits), plan or DecodePlan.default(), out)
    pending: list[tuple[int, Window]] = []  # queued windows, not yet embedded
    oldest = 0.0  # when the first of ``pending`` arrived
    parts: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in range(len(paths))}
    ended: set[int] = set()
    done: set[int] = set()
    next_out = 0

    def run_batch() -> None:
        batch, pending[:] = pending[: runner.batch_size], pending[runner.batch_size :]
        t0 = time.perf_counter()
        vecs = runner([w for _, w in batch])
        share = (time.perf_counter() - t0) / len(batch)
        for row, (i, w) in enumerate(batch):
            r = results[i]
            if r.error is None:
                parts[i].append({k: v[row] for k, v in vecs.items()})
                r.windows.append(
                    {"index": w.index, "start": w.start, "end": w.end,
                     "has_audio": w.has_audio, "has_video": w.has_video}
                )  # fmt: skip
                r.model_s += share

    def finish_ready() -> None:
        for i in sorted(ended - done):
            if any(j == i for j, _ in pending):
                continue
            r = results[i]
            if r.error is None and parts[i]:
                r.vectors = {k: np.stack([p[k] for p in parts[i]]) for k in OUTPUTS}
            parts[i] = []
            done.add(i)

    try:
        while next_out < len(paths):
            try:
                item = out.get(timeout=0.05)
            except queue.Empty:
                item = None
            if item is not None and item[0] == "window":
                if not pending:
                    oldest = time.perf_counter()
                pending.append((item[1], item[2]))
            elif item is not None:
                _, i, error, info = item
                r = results[i]
                r.decoder, r.decode_s = info["decoder"], info["decode_s"]
                if error is not None:
                    r.error, r.message = error
                    pending[:] = [(j, w) for j, w in pending if j != i]
                    r.windows, r.model_s = [], 0.0
                ended.add(i)
            overdue = bool(pending) and time.perf_counter() - oldest > max_wait_s
            while len(pending) >= runner.batch_size or (
                pending and (overdue or len(ended) == len(paths))
            ):
                run_batch()
                oldest = time.perf_counter()
            finish_ready()
            while next_out in done:
                yield results[next_out]
                next_out += 1
    finally:
        decoders.close()
