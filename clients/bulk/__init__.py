"""Bulk indexing of a video library on Ray Data: ``pemt index bulk SOURCE``.

    pemt index bulk videos/ --url http://api:8080 --model-repository model_repository
    pemt index bulk manifest.jsonl --triton-url triton:8001 --address ray://head:10001

Pipeline (one Ray Data dataset, streaming):

1. **decode**: one Ray task per file (``flat_map``), with the service's own decode function and
   the service's limits for jobs (``GET /info``), one row per window;
2. **model**: ``map_batches`` on a pool of actors, each holding the service's own backend:
   ONNX Runtime on the exported model repository, or Triton over gRPC (``--triton-url``);
   batches of ``--batch`` windows from any files;
3. **index**: the driver gathers each file's vectors and, once all of them are in, stores the
   clip through the service's API (``PUT /clips/{id}``: one atomic write per clip).

Why through the API rather than writing a FAISS index here: the service owns its index (one
process holds the FAISS + SQLite directory's lock), and the API keeps its guarantees for bulk
clips too: valid ids and window ids, the reserved metadata keys, one all-or-nothing write that
replaces an earlier clip of the id, and vectors only from the model the service serves (the
request carries the model's identity, computed by the same code on the same model files; 409
``model_mismatch`` otherwise, which stops the run). With the Milvus backend, the same ``PUT``
reaches Milvus through any API replica.

A bad file never stops the job: its error goes to the results file and the report. The
results file (``--results``) also makes a second run skip what the first finished. Failures of
the service itself (unreachable, 5xx, another model) stop the run; run it again to go on.

Ray runs locally by default (``--workers`` CPUs, a small object store, no dashboard) or on a
cluster with ``--address`` (the cluster's workers need this package installed, ``pip install
'pemt[bulk]'``, and the files at the same paths).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clients.bulk._sources import Entry, Results, clip_id_for, read_source

__all__ = ["BulkReport", "Entry", "Results", "clip_id_for", "read_source", "run_bulk"]


@dataclass
class BulkReport:
    """What a run did. ``seconds`` per stage: decode (summed over tasks), model (summed over
    actor batches), index (the driver's PUTs), ray_start, wall (after Ray started)."""

    files: int = 0
    skipped: int = 0
    indexed: int = 0
    failed: int = 0
    windows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "model": 0.0, "index": 0.0, "ray_start": 0.0,
                                 "wall": 0.0}
    )  # fmt: skip

    @property
    def clips_per_s(self) -> float:
        wall = self.seconds["wall"]
        return self.indexed / wall if wall > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clips_per_s": round(self.clips_per_s, 3)}


class _Pending:
    def __init__(self) -> None:
        self.windows: dict[int, dict[str, Any]] = {}
        self.count: int | None = None
        self.error: tuple[str, str] | None = None
        self.model: str | None = None


def _limits(config: dict[str, Any]) -> dict[str, Any]:
    """The service's limits for background jobs, from ``GET /info``'s settings."""
    return {
        "max_duration_s": config.get("max_duration_s"),
        "max_pixels": config.get("max_pixels"),
        "time_budget_s": config.get("job_decode_timeout_s") or config.get("decode_timeout_s"),
        "max_gap_s": config.get("max_gap_s"),
        "require_audio": bool(config.get("require_audio", False)),
        "require_video": bool(config.get("require_video", False)),
        "max_windows": config.get("job_max_windows"),
    }


def _start_ray(address: str | None, workers: int | None, object_store_mb: int) -> None:
    import logging

    import ray

    if address:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        return
    ray.init(
        num_cpus=workers,
        object_store_memory=object_store_mb * 2**20,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )


def run_bulk(
    source: str,
    *,
    url: str | None = None,
    api_key: str | None = None,
    model_repository: str | None = None,
    model_name: str = "pemt",
    triton_url: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    model_actors: int = 1,
    batch: int = 8,
    model_threads: int | None = None,
    stride: float | None = None,
    metadata: dict[str, Any] | None = None,
    results: str | Path = "pemt-bulk-results.jsonl",
    retry_failed: bool = False,
    object_store_mb: int = 256,
    decoder: str = "cpu",
    decode_gpus: float = 0.0,
    progress: Callable[[BulkReport, int], None] | None = None,
) -> BulkReport:
    """Index every file of ``source`` not already in ``results`` (see the module docstring).
    ``decoder``: the decode tasks' video decoder (``cpu``, ``nvdec``, ``auto``: see
    ``pemt.media``); ``decode_gpus``: the GPU share each decode task asks Ray for (e.g. 0.125
    for 8 NVDEC decoders per GPU). ``progress(report, todo)`` is called as files finish."""
    from clients.sdk import PemtClient, PemtError

    if not triton_url and not model_repository:
        raise ValueError(
            "name the model: --model-repository (the exported repository the service serves) "
            "or --triton-url (a Triton serving it)"
        )
    entries = read_source(source)
    ledger = Results(Path(results))
    report = BulkReport(files=len(entries))
    todo = [e for e in entries if not ledger.done(e, retry_failed)]
    report.skipped = len(entries) - len(todo)
    if not todo:
        return report
    by_key = {str(i): e for i, e in enumerate(todo)}
    extra = dict(metadata or {})
    with PemtClient(url, api_key=api_key) as client:
        info = client.info()
        model_config, settings = info["model"]["config"], info["config"]
        t0 = time.perf_counter()
        _start_ray(address, workers, object_store_mb)
        report.seconds["ray_start"] = time.perf_counter() - t0
        try:
            _pipeline(
                client, PemtError, by_key, ledger, report, extra, progress,
                model_config=model_config, limits={**_limits(settings), "decoder": decoder},
                stride=stride, decode_gpus=decode_gpus,
                model_repository=model_repository, model_name=model_name, triton_url=triton_url,
                model_actors=model_actors, batch=batch, model_threads=model_threads,
            )  # fmt: skip
        finally:
            import ray

            ray.shutdown()
    return report


def _pipeline(
    client: Any,
    pemt_error: type[Exception],
    by_key: dict[str, Entry],
    ledger: Results,
    report: BulkReport,
    extra: dict[str, Any],
    progress: Callable[[BulkReport, int], None] | None,
    *,
    model_config: dict[str, Any],
    limits: dict[str, Any],
    stride: float | None,
    decode_gpus: float,
    model_repository: str | None,
    model_name: str,
    triton_url: str | None,
    model_actors: int,
    batch: int,
    model_threads: int | None,
) -> None:
    import ray.data

    from clients.bulk._stages import ModelStage, decode_rows

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    t0 = time.perf_counter()
    items = [{"key": k, "path": e.path} for k, e in by_key.items()]
    ds: Any = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.flat_map(
        decode_rows,
        fn_kwargs={"model_config": model_config, "stride_s": stride, "limits": limits},
        num_cpus=1,
        **({"num_gpus": decode_gpus} if decode_gpus else {}),
    )
    ds = ds.map_batches(
        ModelStage,
        fn_constructor_kwargs={
            "model_path": model_repository,
            "model_name": model_name,
            "triton_url": triton_url,
            "max_batch": batch,
            "threads": model_threads,
        },  # fmt: skip
        batch_size=batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=model_actors),
        num_cpus=0,  # the decode tasks hold the CPUs; the model runs between their windows
    )
    pending: dict[str, _Pending] = {}
    ended: set[str] = set()  # files already stored or reported (late rows are dropped)

    def finish(key: str, p: _Pending) -> None:
        entry = by_key[key]
        if p.error is not None:
            code, message = p.error
            report.failed += 1
            report.errors.append(ledger.record(entry, "error", code=code, message=message))
            return
        windows = [p.windows[i] for i in sorted(p.windows)]
        meta = {**extra, **entry.metadata}
        ti = time.perf_counter()
        try:
            client.put_clip(entry.id, windows, metadata=meta, model=json.loads(p.model or "{}"))
        except pemt_error as e:
            status, code = getattr(e, "status", 0), getattr(e, "code", "")
            if status == 0 or status >= 500 or status in (408, 429) or code == "model_mismatch":
                raise  # the service, not the file: stop; a new run goes on from here
            report.failed += 1
            report.errors.append(
                ledger.record(entry, "error", code=code, message=getattr(e, "message", str(e)))
            )
            return
        finally:
            report.seconds["index"] += time.perf_counter() - ti
        report.indexed += 1
        report.windows += len(windows)
        ledger.record(entry, "ok", windows=len(windows))

    for cols in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(cols["key"])):
            key = str(cols["key"][i])
            if key in ended:
                continue
            p = pending.setdefault(key, _Pending())
            w = int(cols["window"][i])
            report.seconds["model"] += float(cols["model_s"][i])
            if w >= 0:
                has_a, has_v = bool(cols["has_audio"][i]), bool(cols["has_video"][i])
                vectors = {"fused": cols["vec_fused"][i]}
                if has_a:
                    vectors["audio"] = cols["vec_audio"][i]
                if has_v:
                    vectors["visual"] = cols["vec_visual"][i]
                p.windows[w] = {
                    "window": w, "start": float(cols["start"][i]), "end": float(cols["end"][i]),
                    "has_audio": has_a, "has_video": has_v, "vectors": vectors,
                    "thumbnail": bytes(cols["thumbnail"][i]) or None,
                }  # fmt: skip
                p.model = str(cols["model"][i])
            if bool(cols["last"][i]):
                p.count = int(cols["count"][i])
                report.seconds["decode"] += float(cols["decode_s"][i])
                if str(cols["error_code"][i]):
                    p.error = (str(cols["error_code"][i]), str(cols["error"][i]))
            if p.count is not None and (p.error is not None or len(p.windows) >= p.count):
                ended.add(key)
                finish(key, pending.pop(key))
                if progress is not None:
                    progress(report, len(by_key))
        report.seconds["wall"] = time.perf_counter() - t0
    for key, p in pending.items():  # the stream ended without a file's last row: a lost task
        p.error = p.error or ("lost", f"{len(p.windows)} windows arrived, then nothing")
        finish(key, p)
    report.seconds["wall"] = time.perf_counter() - t0


def print_progress(report: BulkReport, todo: int) -> None:
    """One status line on stderr (rewritten in place on a terminal)."""
    done = report.indexed + report.failed
    line = (
        f"pemt index bulk: {done}/{todo} files ({report.indexed} indexed, {report.failed} "
        f"failed), {report.windows} windows, {report.clips_per_s:.2f} clips/s"
    )
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line + ("\n" if done == todo else ""))
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
