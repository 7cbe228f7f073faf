"""End to end on a GPU node: 30-s files on disk -> decoded windows -> ``paper`` embeddings,
through ``pemt.infer`` (decoders and the model overlapping), with where the time goes.

    python bench/gpu_e2e.py --clips gpu-out/clips/720p.mp4 --n 48 --plan nvdec:8+pyav:8

Prints clips/s and, per stage, the busy seconds: decode (summed over files, so above the wall
time when decoders run in parallel) and model (the model's own seconds, one stream). The model
is "never the bottleneck" when its busy time is well under the wall time. The model runs as
served: folded, bf16 autocast, channels-last CNNs, CUDA graphs at a static batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clips", type=Path, nargs="+", required=True)
    ap.add_argument("--n", type=int, default=48, help="files to embed (the clips, repeated)")
    ap.add_argument("--plan", default="nvdec:8+pyav:8")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--config", default="paper")
    ap.add_argument("--mode", default="graph", choices=["eager", "graph", "compile"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    from pemt.config import get_config
    from pemt.infer import DecodePlan, ModelRunner, embed_files
    from pemt.model import build_model, fold

    cfg = get_config(args.config)
    torch.manual_seed(0)
    model = fold(build_model(cfg)).eval()
    runner = ModelRunner(
        model, "cuda", batch_size=args.batch, precision="bf16",
        cuda_graph=args.mode == "graph", compile=args.mode == "compile", static_batch=True,
    )  # fmt: skip
    counts = dict(part.split(":") for part in args.plan.split("+"))
    plan = DecodePlan(nvdec_threads=int(counts.get("nvdec", 0)),
                      cpu_processes=int(counts.get("pyav", 0)))  # fmt: skip
    files = [args.clips[i % len(args.clips)] for i in range(args.n)]

    # warm-up: model shapes (graph capture / compile) and the decoders' first contexts
    list(embed_files(runner, files[: min(len(files), 2 * args.batch)], cfg.media, plan=plan))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    results = list(embed_files(runner, files, cfg.media, plan=plan))
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r.ok]
    decode_s = sum(r.decode_s for r in results)
    model_s = sum(r.model_s for r in results)
    by: dict[str, int] = {}
    for r in results:
        by[r.decoder] = by.get(r.decoder, 0) + 1
    row = {
        "config": args.config, "plan": args.plan, "batch": args.batch, "mode": args.mode,
        "files": len(files), "ok": len(ok), "wall_s": round(wall, 2),
        "clips_per_s": round(len(ok) / wall, 2),
        "decode_busy_s": round(decode_s, 1), "model_busy_s": round(model_s, 2),
        "model_share_of_wall": round(model_s / wall, 3), "decoded_by": by,
        "errors": sorted({f"{r.error}: {r.message[:80]}" for r in results if not r.ok}),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
    }  # fmt: skip
    print("E2E:", json.dumps(row), flush=True)
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
