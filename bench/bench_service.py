"""The service's cost over the work it wraps, and its throughput under concurrent clients.

    .venv/bin/python bench/bench_service.py [--config small] [--repo model_repository]
        [--repeat 5] [--clients 1,2,4,8] [--requests 4] [--out bench/results/service.md]

1. Standalone: decode (``server.core.decode.decode_file``, the function the service's decode
   child runs) + model (``OnnxBackend.embed_sync``) on one clip, in this process.
2. End to end: ``POST /embed`` (store=true) of the same clip to uvicorn on 127.0.0.1, one
   client, sequential; overhead ratio = end-to-end median / standalone median.
3. N concurrent clients, each sending ``--requests`` embeds: throughput and latency percentiles.

The model is a freshly initialised ``--config`` exported by ``export/build_engine.py`` (speed
does not depend on training) unless ``--repo`` names an existing model repository. Writes a
markdown table (stdout and ``--out``) with the command and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pemt.media.encode import make_test_video  # noqa: E402
from server.backends.onnx import OnnxBackend  # noqa: E402
from server.core.decode import DecodeRequest, decode_file  # noqa: E402
from server.testing import ServerProcess, build_test_repository  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", default="small", help="variant to export when --repo is not given")
    ap.add_argument("--repo", type=Path, help="an existing model repository (skips the export)")
    ap.add_argument("--seconds", type=float, default=30.0, help="clip length")
    ap.add_argument("--size", default="480x270", help="clip WxH")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--out", type=Path, default=Path("bench/results/service.md"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pemt-bench-service-"))

    repo = args.repo
    note = ""
    if repo is None:
        t0 = time.perf_counter()
        try:
            repo = build_test_repository(tmp / "repo", args.config)
        except Exception as e:  # noqa: BLE001 - fall back to tiny and say so
            note = f"export of {args.config!r} failed ({str(e)[:200]}); measured tiny instead. "
            repo = build_test_repository(tmp / "repo-tiny", "tiny")
        print(f"exported in {time.perf_counter() - t0:.1f} s -> {repo}")
    w, h = (int(x) for x in args.size.split("x"))
    clip = make_test_video(tmp / "clip.mp4", seconds=args.seconds, width=w, height=h, fps=30)
    size_kib = clip.stat().st_size >> 10

    # 1. standalone
    backend = OnnxBackend.create(repo)
    cfg = backend.cfg
    req = DecodeRequest(str(clip), cfg.media)
    decode_file(req)  # warm-up
    dec_t, model_t, both_t = [], [], []
    n_windows = 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        dec = decode_file(req)
        t1 = time.perf_counter()
        backend.embed_sync(dec.inputs)
        t2 = time.perf_counter()
        dec_t.append(t1 - t0)
        model_t.append(t2 - t1)
        both_t.append(t2 - t0)
        n_windows = len(dec.windows)
    asyncio.run(backend.close())
    standalone = statistics.median(both_t)

    # 2 + 3. the service
    cores = os.cpu_count() or 1
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(tmp / "data"),
        "PEMT_MAX_CONCURRENT_JOBS": "64",
        "PEMT_DECODE_WORKERS": str(cores),
        "PEMT_MAX_UPLOAD_BYTES": str(1 << 30),
    }
    data = clip.read_bytes()
    rows_conc = []
    with ServerProcess(env, log_path=tmp / "server.log") as srv:

        def post(c: httpx.Client, item: str) -> tuple[int, float, dict[str, float]]:
            t0 = time.perf_counter()
            r = c.post("/embed", files={"file": ("clip.mp4", data, "video/mp4")}, data={"id": item})
            dt = time.perf_counter() - t0
            return (
                r.status_code,
                dt,
                (r.json().get("timings_ms", {}) if r.status_code == 200 else {}),
            )

        with httpx.Client(base_url=srv.url, timeout=600) as c:
            post(c, "warm")
            seq = [post(c, f"s{i}") for i in range(args.repeat)]
        assert all(s == 200 for s, _, _ in seq), seq
        e2e = statistics.median(dt for _, dt, _ in seq)
        stages = {k: statistics.median(t[k] for _, _, t in seq) for k in seq[0][2]}

        for n in (int(x) for x in args.clients.split(",")):
            lat: list[float] = []
            codes: list[int] = []
            lock = threading.Lock()

            def client(
                k: int,
                n: int = n,
                lat: list[float] = lat,
                codes: list[int] = codes,
                lock: threading.Lock = lock,
            ) -> None:
                with httpx.Client(base_url=srv.url, timeout=600) as c:
                    for j in range(args.requests):
                        s, dt, _ = post(c, f"c{n}-{k}-{j}")
                        with lock:
                            codes.append(s)
                            if s == 200:
                                lat.append(dt)

            threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            ok = sum(s == 200 for s in codes)
            rows_conc.append((n, len(codes), ok, ok / wall, pct(lat, 50), pct(lat, 99), max(lat)))

    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Service overhead and concurrency (bench/bench_service.py)",
        "",
        f"- command: `{cmd}`",
        f"- machine: {cpu_model()}, {cores} logical CPUs (shared with other work), Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; no GPU; "
        "ONNX Runtime CPUExecutionProvider",
        f"- model: `{cfg.name}` (random init, exported by export/build_engine.py), embed dim "
        f"{cfg.embed_dim}, window {cfg.media.window_seconds:g} s",
        f"- clip: {args.seconds:g}-s H.264/AAC {w}x{h} 30 fps, {size_kib} KiB -> {n_windows} window(s)",
        f"- {note}medians over {args.repeat} runs; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "## One clip: standalone vs end to end",
        "",
        "| path | median s |",
        "| --- | ---: |",
        f"| decode only (decode_file, in process) | {statistics.median(dec_t):.3f} |",
        f"| model only (OnnxBackend.embed_sync) | {statistics.median(model_t):.3f} |",
        f"| standalone decode + model | {standalone:.3f} |",
        f"| POST /embed end to end (client-measured, store=true) | {e2e:.3f} |",
        f"| **overhead ratio** (end to end / standalone) | **{e2e / standalone:.2f}x** |",
        "",
        "Server-side stage medians (timings_ms of the response): "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in stages.items()),
        "",
        "## Concurrent clients (each sends the clip "
        f"{args.requests} times; PEMT_MAX_CONCURRENT_JOBS=64, {cores} decode slots)",
        "",
        "| clients | requests | ok | throughput clips/s | p50 s | p99 s | max s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, total, ok, thr, p50, p99, mx in rows_conc:
        lines.append(f"| {n} | {total} | {ok} | {thr:.2f} | {p50:.3f} | {p99:.3f} | {mx:.3f} |")
    lines += [
        "",
        "p99 over so few requests is close to the maximum; read it as the tail, not a percentile "
        "of a large sample.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
