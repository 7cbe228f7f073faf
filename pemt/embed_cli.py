"""`pemt embed FILE...`: embed files with a checkpoint (or a fresh model), print each file's
windows, embedding norms and the cosine-similarity matrix between files."""

from __future__ import annotations

import argparse
import json
import sys
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
    p.add_argument(
        "--decoder",
        choices=["auto", "cpu", "nvdec"],
        help="video decoder (default: $PEMT_DECODER, else auto: NVDEC where a GPU allows)",
    )
    p.add_argument("--device", default="cpu", help="torch device of the model (cuda on a GPU)")
    p.add_argument("--batch", type=int, default=8, help="windows per model call")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def embed_files(
    model: Any,
    files: list[Path],
    stride: float | None,
    *,
    decoder: str | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """Decode and embed ``files`` through the pipeline (``pemt.infer``); a file's vector is its
    windows' mean. A file that fails has ``error`` (code) and ``message`` instead."""
    from pemt.infer import DecodePlan, ModelRunner
    from pemt.infer import embed_files as pipeline

    runner = ModelRunner(model, device, batch_size=batch_size, precision=precision)
    results: list[dict[str, Any]] = []
    for r in pipeline(runner, files, model.cfg.media, plan=DecodePlan.default(decoder),
                      stride_s=stride):  # fmt: skip
        if not r.ok:
            results.append({"file": r.path, "error": r.error, "message": r.message})
            continue
        emb = r.vectors["embedding"]  # (W, D)
        mean = emb.mean(axis=0)
        results.append(
            {
                "file": r.path,
                "windows": [
                    {
                        "start": round(w["start"], 3),
                        "end": round(w["end"], 3),
                        "has_audio": bool(w["has_audio"]),
                        "has_video": bool(w["has_video"]),
                        "norm": round(float(np.linalg.norm(e)), 4),
                    }
                    for w, e in zip(r.windows, emb, strict=True)
                ],
                "vector": mean / max(float(np.linalg.norm(mean)), 1e-12),
                "decoder": r.decoder,
                "decode_s": round(r.decode_s, 3),
                "model_s": round(r.model_s, 3),
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
    results = embed_files(
        model,
        args.files,
        args.stride,
        decoder=args.decoder,
        batch_size=args.batch,
        device=args.device,
        precision="bf16" if args.bf16 else "fp32",
    )
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"pemt embed: error: {r['file']}: {r['message']}", file=sys.stderr)
    results = [r for r in results if "error" not in r]
    if not results:
        return 2
    vecs = np.stack([r.pop("vector") for r in results])
    sim = vecs @ vecs.T
    if args.json:
        doc = {"config": model.cfg.name, "files": results, "similarity": sim.round(4).tolist()}
        print(json.dumps(doc, indent=2))
        return 2 if failed else 0
    for i, r in enumerate(results):
        print(
            f"[{i}] {r['file']}  decode {r['decode_s']:.2f}s ({r['decoder']})  "
            f"model {r['model_s']:.2f}s"
        )
        for w in r["windows"]:
            mods = "+".join(
                m for m, on in (("video", w["has_video"]), ("audio", w["has_audio"])) if on
            )
            print(f"    {w['start']:8.2f}-{w['end']:8.2f}s  {mods:<11} |e|={w['norm']:.4f}")
    print("cosine similarity:")
    print("      " + "".join(f"{j:>8}" for j in range(len(results))))
    for i, row in enumerate(sim):
        print(f"  [{i}] " + "".join(f"{v:8.3f}" for v in row))
    return 2 if failed else 0
