"""`pemt embed FILE...`: embed files with a checkpoint (or a fresh model), print each file's
windows, embedding norms and the cosine-similarity matrix between files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def register(sub: Any) -> None:
    p = sub.add_parser("embed", help="embed video files and compare them", description=__doc__)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--config", default="small", help="variant name or JSON path (no checkpoint)")
    p.add_argument("--checkpoint", type=Path, help="a .safetensors checkpoint (sets the config)")
    p.add_argument("--stride", type=float, help="window stride in seconds (default: half a window)")
    p.add_argument("--seed", type=int, default=0, help="init seed when no checkpoint is given")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def embed_files(model: Any, files: list[Path], stride: float | None) -> list[dict[str, Any]]:
    """Decode each file into windows and embed them; a file's vector is its windows' mean."""
    import torch

    from pemt.media import batch_windows, load_windows

    cfg = model.cfg
    results = []
    for path in files:
        t0 = time.perf_counter()
        windows = load_windows(path, cfg.media, stride_s=stride)
        t1 = time.perf_counter()
        inputs = batch_windows(windows)
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        emb = out["embedding"].float().numpy()  # (W, D)
        t2 = time.perf_counter()
        mean = emb.mean(axis=0)
        results.append(
            {
                "file": str(path),
                "windows": [
                    {
                        "start": round(w.start, 3),
                        "end": round(w.end, 3),
                        "has_audio": bool(w.has_audio),
                        "has_video": bool(w.has_video),
                        "norm": round(float(np.linalg.norm(e)), 4),
                    }
                    for w, e in zip(windows, emb, strict=True)
                ],
                "vector": mean / max(float(np.linalg.norm(mean)), 1e-12),
                "decode_s": round(t1 - t0, 3),
                "model_s": round(t2 - t1, 3),
            }
        )
    return results


def run(args: argparse.Namespace) -> int:
    import torch

    from pemt.config import load_config
    from pemt.model import build_model, load

    for f in args.files:
        if not f.is_file():
            raise ValueError(f"{f}: no such file")
    if args.checkpoint is not None:
        model = load(args.checkpoint)
    else:
        torch.manual_seed(args.seed)
        model = build_model(load_config(args.config))
        print(
            f"note: no --checkpoint given; using an untrained {model.cfg.name!r} model "
            f"(seed {args.seed}): similarities reflect low-level signal only",
            file=sys.stderr,
        )
    model.eval()
    results = embed_files(model, args.files, args.stride)
    vecs = np.stack([r.pop("vector") for r in results])
    sim = vecs @ vecs.T
    if args.json:
        doc = {"config": model.cfg.name, "files": results, "similarity": sim.round(4).tolist()}
        print(json.dumps(doc, indent=2))
        return 0
    for i, r in enumerate(results):
        print(f"[{i}] {r['file']}  decode {r['decode_s']:.2f}s  model {r['model_s']:.2f}s")
        for w in r["windows"]:
            mods = "+".join(
                m for m, on in (("video", w["has_video"]), ("audio", w["has_audio"])) if on
            )
            print(f"    {w['start']:8.2f}-{w['end']:8.2f}s  {mods:<11} |e|={w['norm']:.4f}")
    print("cosine similarity:")
    print("      " + "".join(f"{j:>8}" for j in range(len(results))))
    for i, row in enumerate(sim):
        print(f"  [{i}] " + "".join(f"{v:8.3f}" for v in row))
    return 0
