"""`pemt shards make|inspect` and `pemt train`. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields


def _shards_make(args: argparse.Namespace) -> int:
    from pemt.train.shards import make_shards

    r = make_shards(
        args.video_dir, args.out_dir, labels_csv=args.labels, shard_size=args.shard_size,
        decode_check=not args.probe_only, progress=not args.quiet,
    )  # fmt: skip
    print(
        f"wrote {r.written} videos ({r.total_duration:.1f} s) to {len(r.shards)} shards in "
        f"{args.out_dir}; labels: {dict(sorted(r.labels.items()))}"
    )
    if r.skipped:
        print(f"skipped {len(r.skipped)} files (listed in {args.out_dir}/skipped.txt):")
        for path, reason in r.skipped:
            print(f"  {path}: {reason}")
    return 0 if r.written else 1


def _shards_inspect(args: argparse.Namespace) -> int:
    from pemt.train.shards import inspect_shards

    s = inspect_shards(args.shards)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    mb = s["media_bytes"] / 1e6
    print(f"shards: {s['shards']}  samples: {s['samples']}  total duration: "
          f"{s['total_duration_s'] / 3600:.2f} h ({s['total_duration_s']:.1f} s)  media: {mb:.1f} MB")  # fmt: skip
    print(f"labels ({len(s['labels'])}): " + ", ".join(f"{k}={v}" for k, v in s["labels"].items()))
    print("containers: " + ", ".join(f"{k}={v}" for k, v in s["extensions"].items()))
    print(f"without audio: {s['without_audio']}  without video: {s['without_video']}")
    for sh in s["per_shard"]:
        size = f"{sh['bytes'] / 1e6:.1f} MB" if sh["bytes"] is not None else "?"
        print(f"  {sh['url']}: {sh['samples']} samples, {size}")
    for e in s["damaged"]:
        print(f"  DAMAGED {e}")
    return 1 if s["damaged"] else 0


def _train(args: argparse.Namespace) -> int:
    from pemt.config import load_config
    from pemt.train.trainer import TrainConfig, train

    names = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names and v is not None}
    kw["progress"] = not args.quiet
    tcfg = TrainConfig(**kw)
    if args.config is None and args.init is None:
        raise ValueError("pass --config (paper | small | tiny | a JSON file) or --init CHECKPOINT")
    if args.config is not None:
        cfg = load_config(args.config)
    else:  # fine-tune the checkpoint's own model
        from pemt.model import load as load_model

        cfg = load_model(args.init).cfg
    last = train(cfg, args.shards, args.out, tcfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0 if last.get("exit") == "done" else 143
    summary = {
        k: last[k]
        for k in (
            "final_step",
            "loss",
            "mep",
            "pair",
            "clip",
            "cons_fused",
            "cons_visual",
            "cons_audio",
            "bad_samples",
        )
        if k in last
    }
    print(f"train {last.get('exit')}: {json.dumps(summary)}; weights in {args.out}/model.safetensors"
          if last.get("exit") == "done" else f"train stopped: {json.dumps(summary)}")  # fmt: skip
    return 0 if last.get("exit") == "done" else 143


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("shards", help="WebDataset shards of videos: make, inspect")
    sub = p.add_subparsers(dest="shards_command", required=True, metavar="ACTION")
    m = sub.add_parser("make", help="pack a folder of videos into tar shards")
    m.add_argument("video_dir", help="folder of videos (labels from subfolder names)")
    m.add_argument("out_dir")
    m.add_argument("--labels", help="CSV of path,label (overrides folder names)")
    m.add_argument("--shard-size", type=int, default=256, help="videos per shard")
    m.add_argument("--probe-only", action="store_true", help="skip the decode check (faster)")
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=_shards_make)
    i = sub.add_parser("inspect", help="summarize shards (count, labels, duration, sizes)")
    i.add_argument("shards", help="path, dir, glob, {a..b} pattern or pipe: URL")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_shards_inspect)

    t = subparsers.add_parser(
        "train", help="train PEMT on shards (torchrun for DDP)",
        description="Train PEMT. Under torchrun every process trains one rank "
        "(gloo on CPU, nccl on GPU).",
    )  # fmt: skip
    t.add_argument("--config", help="paper | small | tiny | path to a JSON config "
                   "(default with --init: the checkpoint's)")  # fmt: skip
    t.add_argument("--init", help="start from this PEMT checkpoint (pemt train, pemt import "
                   "avbert); the objectives' heads start fresh")  # fmt: skip
    t.add_argument("--recipe", choices=["paper", "robust"],
                   help="paper: the paper's objectives (default); robust: plus augmentation "
                   "consistency between two edited views of every window (near-duplicate search)")  # fmt: skip
    t.add_argument("--w-cons-fused", type=float, help="robust: weight on the fused embedding")
    t.add_argument("--w-cons-visual", type=float, help="robust: weight on visual_embedding")
    t.add_argument("--w-cons-audio", type=float, help="robust: weight on audio_embedding")
    t.add_argument("--consistency-temperature", type=float, help="robust: NT-Xent temperature")
    t.add_argument("--first-view-edits", type=float,
                   help="robust: scale of the first view's edit probabilities (default 0.3)")  # fmt: skip
    t.add_argument("--consistency-both-grad", dest="consistency_stopgrad", action="store_false",
                   default=None, help="robust: gradients through both views (2x the CNN cost)")  # fmt: skip
    t.add_argument("--shards", required=True, help="path, dir, glob, {a..b} pattern or pipe: URL")
    t.add_argument("--out", required=True, help="output folder (checkpoints, metrics, tb)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/latest")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--accum", type=int, help="micro-batches per optimizer step")
    t.add_argument("--lr", type=float)
    t.add_argument("--warmup", type=int)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--mask-ratio", type=float)
    t.add_argument("--num-negatives", type=int)
    t.add_argument("--negatives", choices=["uniform", "content"])
    t.add_argument("--sampling-temperature", type=float, help="content-aware softmax temperature")
    t.add_argument("--temperature", type=float, help="InfoNCE temperature (initial if learned)")
    t.add_argument("--fixed-temperature", dest="learn_temperature", action="store_false",
                   default=None)  # fmt: skip
    t.add_argument("--pair-fraction", type=float)
    t.add_argument("--w-mep", type=float)
    t.add_argument("--w-pair", type=float)
    t.add_argument("--w-clip", type=float)
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument("--keep", type=int, help="checkpoints to keep")
    t.add_argument("--log-every", type=int)
    t.add_argument("--workers", type=int, help="decoding processes per rank")
    t.add_argument(
        "--decode-cache-mb",
        type=int,
        help="keep decoded windows for later epochs, up to this many MiB (default 0)",
    )
    t.add_argument("--shuffle-buffer", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--activation-checkpointing", action="store_true", default=None)
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--threads", type=int, help="torch threads per process (default: torch's)")
    t.add_argument("--no-bf16", dest="bf16", action="store_false", default=None)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)


if __name__ == "__main__":  # python -m pemt.train.cli (torchrun -m pemt.train.cli train ...)
    from pemt.cli import main

    sys.exit(main())
