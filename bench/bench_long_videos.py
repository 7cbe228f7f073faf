"""Peak service memory against video length: a 1-minute and a 60-minute 270p video through
``POST /jobs`` (and, for reference, the 1-minute one through ``/embed``).

    .venv/bin/python bench/bench_long_videos.py [--config small] [--repo DIR]
        [--minutes 1,60] [--fps 8] [--out FILE]

Each length gets a fresh ``uvicorn server.main:create_app`` (default settings; the model
``--config`` exported by ``export/build_engine.py``), one upload as a job (stride: the
default, half a window), polled until done. ``--warm N``: before measuring, the service
embeds an N-minute clip through ``/embed`` (not stored), so that ONNX Runtime's memory arena
has reached its plateau (it grows over the first two full batches, whatever the video;
``bench_hostile_memory.py --model-plateau``); the idle figure is then taken after it. A thread sums VmRSS over the server process and
all its descendants (forkserver, decode children) every 50 ms, as ``bench_hostile_memory.py``
does. Videos: ``pemt.media.encode.make_test_video``, 480x270 H.264 at ``--fps`` (the model's
fps by default) with 16-kHz mono AAC, made once into ``.cache/bench/long/``.
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

from bench_hostile_memory import Sampler, _kill_tree, cpu_model, tree_rss  # noqa: E402

from clients.sdk import PemtClient  # noqa: E402
from pemt.media.encode import make_test_video  # noqa: E402
from server.testing import ServerProcess, build_test_repository  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def video(minutes: float, fps: int) -> Path:
    d = ROOT / ".cache" / "bench" / "long"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"v{minutes:g}min-270p-{fps}fps.mp4"
    if not path.exists():
        t0 = time.perf_counter()
        tmp = path.with_suffix(".part.mp4")
        make_test_video(
            tmp, seconds=minutes * 60, width=480, height=270, fps=fps, sample_rate=16000,
            channels=1, pattern=3,
        )  # fmt: skip
        tmp.rename(path)
        print(f"made {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def run(repo: Path, path: Path, route: str, tmp: Path, warm: Path | None) -> dict[str, object]:
    env = {
        "PYTHONPATH": str(ROOT),
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(tmp / f"data-{path.stem}-{route}"),
        "PEMT_MAX_UPLOAD_BYTES": str(4 << 30),
    }
    srv = ServerProcess(env, log_path=tmp / f"server-{path.stem}-{route}.log").start(timeout=120)
    try:
        time.sleep(1.0)
        assert srv.proc is not None
        cold = tree_rss(srv.proc.pid)[1]
        if warm is not None:
            with PemtClient(srv.url, read_timeout=3600) as c:
                c.embed(warm, store=False)
            time.sleep(1.0)
        idle = tree_rss(srv.proc.pid)[1]
        sampler = Sampler(srv, 16 << 30)
        sampler.start()
        t0 = time.perf_counter()
        with PemtClient(srv.url, read_timeout=3600) as c:
            if route == "jobs":
                job = c.wait(c.submit(path).id, poll=1.0)
                windows, state = job.progress.windows_done, job.state
            else:
                windows, state = len(c.embed(path).items), "done"
        wall = time.perf_counter() - t0
        peak, parent = sampler.stop()
        return {"cold": cold, "idle": idle, "peak": peak, "parent": parent, "windows": windows,
                "state": state, "wall": wall}  # fmt: skip
    finally:
        srv.stop()
        if srv.proc is not None and srv.proc.poll() is None:
            _kill_tree(srv.proc.pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--repo", type=Path, help="an existing model repository (skips the export)")
    ap.add_argument("--minutes", default="1,60")
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--warm", type=float, default=0, help="minutes of warm-up video (0: none)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    repo = args.repo or build_test_repository(ROOT / ".cache" / "bench" / "repo-small", args.config)
    tmp = Path(tempfile.mkdtemp(prefix="pemt-bench-long-"))
    minutes = [float(m) for m in args.minutes.split(",")]
    warm = video(args.warm, args.fps) if args.warm else None
    rows = []
    for m in minutes:
        path = video(m, args.fps)
        routes = (
            ["jobs", "embed"] if m * 60 < 600 else ["jobs"]
        )  # /embed: under PEMT_EMBED_MAX_DURATION_S
        for route in routes:
            r = run(repo, path, route, tmp, warm)
            rows.append((m, route, path.stat().st_size, r))
            print(f"{m:g} min via /{route}: {r}", flush=True)

    def gib(b: object) -> str:
        return f"{int(b) / 2**30:.2f}"  # type: ignore[call-overload]

    jobs = {m: r for m, route, _, r in rows if route == "jobs"}
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Peak service memory against video length",
        "",
        f"- command: `{cmd}`",
        f"- machine: 2-core shared CPU box ({cpu_model()}, {os.cpu_count()} logical CPUs), "
        f"Python {platform.python_version()}; ONNX Runtime CPU; model `{args.config}`; "
        f"default settings (PEMT_MAX_BATCH=8); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- warm-up before measuring: {f'{args.warm:g}-min clip through /embed' if warm else 'none'}",
        "",
        "| video | file MiB | route | windows | started GiB | idle GiB | peak GiB | peak of "
        "uvicorn alone GiB | wall s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m, route, size, r in rows:
        lines.append(
            f"| {m:g} min 480x270 {args.fps} fps | {size / 2**20:.1f} | /{route} | {r['windows']} "
            f"| {gib(r['cold'])} | {gib(r['idle'])} | {gib(r['peak'])} | {gib(r['parent'])} "
            f"| {r['wall']:.0f} |"
        )
    if len(jobs) >= 2:
        lo, hi = min(jobs), max(jobs)
        ratio = int(jobs[hi]["peak"]) / int(jobs[lo]["peak"])  # type: ignore[call-overload]
        lines += ["", f"Peak ratio {hi:g} min / {lo:g} min through /jobs: **{ratio:.2f}**"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
