"""Bulk indexing throughput on a local Ray instance: clips/s with 1 and 2 workers, and the
split of the time between the stages (decode tasks, model actor, index PUTs).

    .venv/bin/python bench/bench_bulk.py [--config small] [--repo DIR] [--clips 24]
        [--seconds 30] [--workers 1,2] [--batch 8] [--out FILE]

The library: ``--clips`` files of ``--seconds`` s, 480x270 H.264 at the model's fps with
16-kHz mono AAC (``pemt.media.encode``), made once into ``.cache/bench/bulk/``. For each worker
count: a fresh service (``uvicorn server.main:create_app``, the ``--config`` model), a fresh
results file, and ``clients.bulk.run_bulk`` in this process (the driver) with ``--workers``
CPUs for the local Ray instance and one ONNX Runtime model actor on the same exported model.
clips/s = files indexed / wall time after Ray started (Ray's start-up is reported apart).
The stage seconds are sums over tasks and batches, so with 2 workers decode can exceed wall.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hostile_memory import cpu_model  # noqa: E402

from clients.bulk import run_bulk  # noqa: E402
from pemt.config import get_config  # noqa: E402
from pemt.media.encode import make_test_video  # noqa: E402
from server.testing import ServerProcess, build_test_repository  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def library(n: int, seconds: float, fps: int) -> Path:
    d = ROOT / ".cache" / "bench" / "bulk" / f"{n}x{seconds:g}s-270p-{fps}fps"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = d / f"clip{i:03d}.mp4"
        if not path.exists():
            tmp = path.with_suffix(".part.mp4")
            make_test_video(
                tmp, seconds=seconds, width=480, height=270, fps=fps, sample_rate=16000,
                channels=1, pattern=i % 7, tone_hz=300.0 + 37 * i,
            )  # fmt: skip
            tmp.rename(path)
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    repo = args.repo or build_test_repository(ROOT / ".cache" / "bench" / "repo-small", args.config)
    fps = get_config(args.config).media.fps
    t0 = time.perf_counter()
    lib = library(args.clips, args.seconds, fps)
    print(f"library {lib} ready in {time.perf_counter() - t0:.0f} s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="pemt-bench-bulk-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = []
    for w in (int(x) for x in args.workers.split(",")):
        data = tmp / f"data-w{w}"
        env = {"PYTHONPATH": str(ROOT), "PEMT_MODEL_PATH": str(repo), "PEMT_DATA_DIR": str(data)}
        with ServerProcess(env, log_path=tmp / f"server-w{w}.log").start(timeout=120) as srv:
            report = run_bulk(
                str(lib), url=srv.url, model_repository=str(repo), workers=w, batch=args.batch,
                results=tmp / f"results-w{w}.jsonl",
            )  # fmt: skip
        rows.append((w, report))
        print(f"workers={w}: {report.to_dict()}", flush=True)

    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Bulk indexing on a local Ray instance (`pemt index bulk`)",
        "",
        f"- command: `{cmd}`",
        f"- machine: 2-core shared CPU box ({cpu_model()}, {os.cpu_count()} logical CPUs), "
        f"Python {platform.python_version()}; Ray Data, ONNX Runtime CPU, model `{args.config}`, "
        f"one model actor, batches of {args.batch}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- library: {args.clips} clips of {args.seconds:g} s, 480x270 H.264 {fps} fps + AAC; the "
        "service on the same machine",
        "",
        "| Ray workers (CPUs) | clips | windows | clips/s | wall s | Ray start s | decode s | model s "
        "| index s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w, r in rows:
        sec = r.seconds
        lines.append(
            f"| {w} | {r.indexed} | {r.windows} | {r.clips_per_s:.2f} | {sec['wall']:.1f} | "
            f"{sec['ray_start']:.1f} | {sec['decode']:.1f} | {sec['model']:.1f} | "
            f"{sec['index']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
