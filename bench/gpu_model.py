"""PEMT forward throughput on one GPU: eager fp32, bf16 autocast, channels-last CNNs,
torch.compile, CUDA graphs, at several batch sizes.

Self-contained for a bare GPU box (torch + numpy only): imports just ``pemt.config``,
``pemt.model`` and torch. ``pemt.model`` uses ``einops.rearrange`` and ``safetensors``; when
those packages are missing, this script installs small stand-ins first (a rearrange written with
torch reshape/permute for the patterns the model uses, and a safetensors stub that refuses to be
used: the benchmark never reads a checkpoint). It prints which one it used.

    python bench/gpu_model.py                        # paper, batches 1/8/32, cuda (H100/H200)
    python bench/gpu_model.py --config tiny --device cpu --batches 2 --iters 2   # smoke test

"CL" modes put the CNN weights in channels-last (3-D) memory format (``pemt.infer``): the
frames arrive as (N, F, S, S, 3), already NDHWC, so cuDNN runs without transposes.

Every mode runs the *folded* model (what Triton serves) on the same random inputs (uint8 frames,
log-mel audio, all segments real); the first row is the factored model as trained, for scale.
FLOPs per clip are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (matmul, conv,
attention; elementwise ops are not counted), and "of peak" divides achieved FLOP/s by the card's
dense bf16 matrix rate (989 TFLOP/s for H100 SXM and H200; ``--peak-tflops`` to override), also
for the fp32 rows, as in docs/DESIGN's anchors.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import re
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0}
SHIMS: list[str] = []


# --- stand-ins for a bare torch box --------------------------------------------------------


def _parse_side(side: str) -> list[list[str]]:
    """'b (h e) n 1' -> [['b'], ['h', 'e'], ['n'], []]"""
    groups: list[list[str]] = []
    for tok in re.findall(r"\([^)]*\)|\S+", side):
        if tok.startswith("("):
            groups.append([t for t in tok[1:-1].split() if t != "1"])
        elif tok == "1":
            groups.append([])
        else:
            groups.append([tok])
    return groups


def _rearrange(x: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    left_s, right_s = pattern.split("->")
    if "..." in left_s:  # expand the ellipsis into named axes on both sides
        n = x.dim() - (len(re.findall(r"\([^)]*\)|\S+", left_s)) - 1)
        names = " ".join(f"_e{i}" for i in range(n))
        left_s, right_s = left_s.replace("...", names), right_s.replace("...", names)
    left, right = _parse_side(left_s), _parse_side(right_s)
    if len(left) != x.dim():
        raise ValueError(
            f"pattern {pattern!r} expects {len(left)} dims, got shape {tuple(x.shape)}"
        )
    known: dict[str, int] = dict(sizes)
    for group, dim in zip(left, x.shape, strict=True):
        unknown = [a for a in group if a not in known]
        prod = math.prod(known[a] for a in group if a in known)
        if len(unknown) > 1:
            raise ValueError(f"cannot infer {unknown} in {pattern!r}")
        if unknown:
            known[unknown[0]] = dim // prod
    elementary = [a for g in left for a in g]
    x = x.reshape([known[a] for a in elementary])
    order = [a for g in right for a in g]
    if sorted(order) != sorted(elementary):
        raise ValueError(f"axes differ between the sides of {pattern!r}")
    x = x.permute([elementary.index(a) for a in order])
    return x.reshape([math.prod(known[a] for a in g) for g in right])


def install_shims() -> None:
    if importlib.util.find_spec("einops") is None:
        mod = types.ModuleType("einops")
        mod.rearrange = _rearrange  # type: ignore[attr-defined]
        sys.modules["einops"] = mod
        SHIMS.append("einops.rearrange (torch reshape/permute stand-in)")
    if importlib.util.find_spec("safetensors") is None:

        def refuse(*_: Any, **__: Any) -> Any:
            raise RuntimeError("safetensors is not installed; this benchmark reads no checkpoint")

        st = types.ModuleType("safetensors")
        st.safe_open = refuse  # type: ignore[attr-defined]
        st_torch = types.ModuleType("safetensors.torch")
        st_torch.save_file = refuse  # type: ignore[attr-defined]
        st_torch.load_file = refuse  # type: ignore[attr-defined]
        st.torch = st_torch  # type: ignore[attr-defined]
        sys.modules["safetensors"], sys.modules["safetensors.torch"] = st, st_torch
        SHIMS.append("safetensors (stub, unused)")


# --- benchmark ----------------------------------------------------------------------------


def make_inputs(cfg: Any, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    m = cfg.media
    t, f, s = m.num_segments, m.frames_per_segment, m.image_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch, t, f, s, s, 3), dtype=torch.uint8, generator=g)
    audio = torch.randn(batch, t, m.n_mels, m.audio_frames_per_segment, generator=g)
    mask = torch.ones(batch, t, dtype=torch.bool)
    return tuple(x.to(device) for x in (frames, audio, mask, mask.clone()))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int) -> float:
    """Seconds per call (mean over ``iters`` after ``warmup``)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def count_flops(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    one = tuple(x[:1] for x in inputs)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(*one)
    return int(fc.get_total_flops())


def autocast(device: torch.device, enabled: bool, cache: bool = True) -> Any:
    # CUDA graph capture needs cache=False: autocast's weight-cast cache must not outlive capture
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=cache)


def run_mode(
    mode: str,  # a name of MODES; " CL" at the end: channels-last CNN weights
    factored: torch.nn.Module,
    folded: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    device: torch.device,
    iters: int,
    warmup: int,
) -> float:
    """Seconds per batch for one mode."""
    if mode.endswith(" CL"):
        from pemt.infer import to_channels_last

        folded = _channels_last_copy(folded, to_channels_last)
        mode = mode[: -len(" CL")]
    if mode == "eager fp32 (factored)":

        def fn() -> Any:
            with torch.inference_mode():
                return factored(*inputs)

        return time_fn(fn, device, iters, warmup)
    if mode == "eager fp32":

        def fn() -> Any:
            with torch.inference_mode():
                return folded(*inputs)

        return time_fn(fn, device, iters, warmup)
    if mode == "eager bf16 autocast":

        def fn() -> Any:
            with torch.inference_mode(), autocast(device, True):
                return folded(*inputs)

        return time_fn(fn, device, iters, warmup)
    if mode.startswith("torch.compile bf16"):
        compile_mode = mode.split("/", 1)[1] if "/" in mode else None  # e.g. .../max-autotune
        compiled = torch.compile(folded, dynamic=False, mode=compile_mode)

        def fn() -> Any:
            with torch.inference_mode(), autocast(device, True):
                return compiled(*inputs)

        return time_fn(fn, device, iters, max(warmup, 2))
    if mode == "CUDA graph bf16":
        if device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        static = tuple(x.clone() for x in inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode(), autocast(device, True, cache=False):
            for _ in range(3):  # warm up on a side stream before capture
                folded(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode(), autocast(device, True, cache=False):
            folded(*static)
        return time_fn(graph.replay, device, iters, warmup)
    raise ValueError(f"unknown mode {mode!r}")


MODES = [
    "eager fp32 (factored)",
    "eager fp32",
    "eager bf16 autocast",
    "eager bf16 autocast CL",
    "CUDA graph bf16 CL",
    "torch.compile bf16 CL",
    "torch.compile bf16/max-autotune-no-cudagraphs CL",
]
_CL_CACHE: dict[int, torch.nn.Module] = {}


def _channels_last_copy(model: torch.nn.Module, convert: Callable[[torch.nn.Module], None]) -> Any:
    """One channels-last copy of ``model`` per process (the weights, not the inputs)."""
    if id(model) not in _CL_CACHE:
        import copy

        m = copy.deepcopy(model)
        convert(m)
        _CL_CACHE[id(model)] = m
    return _CL_CACHE[id(model)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--config", default="paper")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES)
    )
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the card (TFLOP/s)")
    ap.add_argument(
        "--tf32",
        action="store_true",
        help="let fp32 rows use TF32 tensor cores (default: strict fp32)",
    )
    args = ap.parse_args(argv)

    install_shims()
    from pemt.config import get_config
    from pemt.model import build_model, fold

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(
                "no CUDA device; for a smoke test use --device cpu --config tiny", file=sys.stderr
            )
            return 2
        name = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = args.tf32  # fp32 rows mean fp32 unless --tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True
    else:
        name = f"CPU ({torch.get_num_threads()} threads)"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)

    cfg = get_config(args.config)
    torch.manual_seed(0)
    factored = build_model(cfg).eval().to(device)
    folded = fold(factored).eval()
    sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    flops = count_flops(folded, make_inputs(cfg, 1, device))
    params = sum(p.numel() for p in folded.parameters())

    print(f"# PEMT forward throughput: {args.config}, batches {sizes}, {name}")
    print()
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}; folded params {params / 1e6:.1f}M; "
        f"{flops / 1e9:.4g} GFLOP per clip (FlopCounterMode); iters {args.iters}, "
        f"warmup {args.warmup}; TF32 {'on' if args.tf32 else 'off'}; peak {peak or '?'} TFLOP/s dense bf16"
        + (f"; stand-ins: {', '.join(SHIMS)}" if SHIMS else "")
    )
    print()
    print("| mode | batch | ms / batch | clips/s | TFLOP/s | of bf16 peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        for batch in sizes:
            if mode.startswith("eager fp32") and batch != max(sizes):
                continue  # fp32 rows for scale only, at the largest batch
            inputs = make_inputs(cfg, batch, device)
            try:
                sec = run_mode(mode, factored, folded, inputs, device, args.iters, args.warmup)
            except Exception as e:  # a mode that cannot run here is a row that says why
                msg = " ".join(str(e).split())[:120]
                print(f"| {mode} | {batch} | failed: {type(e).__name__}: {msg} | | | |", flush=True)
                continue
            clips = batch / sec
            tflops = flops * clips / 1e12
            frac = f"{100 * tflops / peak:.1f}%" if peak else "n/a"
            print(
                f"| {mode} | {batch} | {sec * 1e3:.1f} | {clips:.1f} | {tflops:.1f} | {frac} |",
                flush=True,
            )
            del inputs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if device.type == "cuda":
        print(f"\npeak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
