"""Cost of ``--recipe robust`` against the paper's recipe: training throughput of `small` on the
demo's data, the two recipes taking turns in one process (a shared machine's load moves;
ratios from one run are what to compare).

Each round trains ``--steps`` steps per recipe with `make demo`'s settings (batch 8, 1 torch
thread, 2 loader workers) through :func:`pemt.train.trainer.train`, and reads the throughput
the trainer logs after the first ``--log-every`` steps (worker start-up excluded)::

    .venv/bin/python bench/bench_recipe.py --shards .cache/demo/shards --steps 30 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pemt.config import get_config  # noqa: E402
from pemt.train.trainer import TrainConfig, train  # noqa: E402


def clips_per_s(recipe: str, shards: str, steps: int, log_every: int) -> float:
    out = Path(tempfile.mkdtemp(prefix=f"pemt-bench-{recipe}-"))
    try:
        tc = TrainConfig(steps=steps, batch_size=8, warmup=max(1, steps // 10), lr=5e-4, threads=1,
                         workers=2, log_every=log_every, checkpoint_every=10**9, keep=1,
                         progress=False, recipe=recipe)  # fmt: skip
        train(get_config("small"), shards, out, tc)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return statistics.median(r["clips_per_s"] for r in rows[1:])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default=".cache/demo/shards")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    seen: dict[str, list[float]] = {"paper": [], "robust": []}
    for r in range(args.rounds):
        for recipe in ("paper", "robust"):
            load = os.getloadavg()[0]
            v = clips_per_s(recipe, args.shards, args.steps, args.log_every)
            seen[recipe].append(v)
            print(f"round {r + 1} {recipe}: {v:.2f} clips/s (load average {load:.1f})", flush=True)
    p, q = statistics.median(seen["paper"]), statistics.median(seen["robust"])
    print(
        f"median: paper {p:.2f} clips/s, robust {q:.2f} clips/s -> robust step costs {p / q:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
