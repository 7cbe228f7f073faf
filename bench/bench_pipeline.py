"""Decode-only vs decode + model for a 30-s clip at 720p and 270p, `small` and `paper`, on this CPU.

    .venv/bin/python bench/bench_pipeline.py [--repeat 3] [--out bench/results/pipeline.md]

All figures come from one run, so the ratios compare like with like. Model weights are random
(speed does not depend on training). Writes a markdown table (stdout and --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pemt.config import get_config
from pemt.media import batch_windows, load_windows
from pemt.media.encode import make_test_video
from pemt.model import build_model


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--configs", default="small,paper")
    ap.add_argument("--out", type=Path, default=Path("bench/results/pipeline.md"))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="pemt-bench-"))
    clips = {}
    for label, (w, h) in {"720p": (1280, 720), "270p": (480, 270)}.items():
        path = tmp / f"clip_{label}.mp4"
        t0 = time.perf_counter()
        make_test_video(path, seconds=30, width=w, height=h, fps=30)
        print(
            f"encoded {label} 30-s H.264/AAC in {time.perf_counter() - t0:.1f}s ({path.stat().st_size >> 10} KiB)"
        )
        clips[label] = path

    rows = []
    for name in args.configs.split(","):
        cfg = get_config(name)
        model = build_model(cfg).eval()
        for label, path in clips.items():
            windows = load_windows(path, cfg.media)  # warm-up (file cache, codec init)
            inputs = {k: torch.from_numpy(v) for k, v in batch_windows(windows).items()}
            decode_s = _median_time(lambda p=path, c=cfg: load_windows(p, c.media), args.repeat)

            def run_model(inputs=inputs, model=model):
                with torch.inference_mode():
                    model(**inputs)

            run_model()
            model_s = _median_time(run_model, args.repeat)
            rows.append((name, label, len(windows), decode_s, model_s))
            print(
                f"{name:6} {label}: windows={len(windows)} decode {decode_s:.2f}s model {model_s:.2f}s"
            )

    cpu = platform.processor() or platform.machine()
    lines = [
        "| config | clip | windows | decode (s) | model (s) | decode + model (s) | decode share |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, label, nw, d, m in rows:
        lines.append(
            f"| {name} | 30 s {label} H.264/AAC | {nw} | {d:.2f} | {m:.2f} | {d + m:.2f} | {d / (d + m):.0%} |"
        )
    table = "\n".join(lines)
    header = (
        f"Command: `.venv/bin/python bench/bench_pipeline.py --repeat {args.repeat}`; machine: "
        f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"median of {args.repeat}.\n\n"
    )
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
