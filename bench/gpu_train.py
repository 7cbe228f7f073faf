"""Training throughput and memory of PEMT on one GPU (H100/H200), synthetic inputs.

Self-contained: needs torch (2.11+) and numpy, imports only pemt.config, pemt.model and
pemt.train.losses from this repository; no decoding, no data. It runs the training objectives
of ``pemt train`` (masked embedding prediction with content-aware negatives, correct pair
prediction, clip audio-visual InfoNCE) on random uint8 frames and log-mel audio, full AdamW steps
(amsgrad, betas 0.9/0.98), bf16 autocast, and measures for the chosen config on ``--seconds``
clips:

- training clips/s and peak GPU memory at ``--batch``, with and without activation checkpointing
  (CNNs checkpointed in chunks of ``--chunk`` segments, as ``pemt train --activation-checkpointing``);
- the largest batch per GPU that trains, by doubling until out of memory, both ways.

Prints a markdown table. Examples::

    python bench/gpu_train.py                                  # paper, 30-s clips, cuda
    python bench/gpu_train.py --config tiny --device cpu       # CPU smoke test (seconds)

If ``einops`` or ``safetensors`` (used by pemt.model) are missing, a minimal stand-in is
installed for this process (rearrange for the patterns pemt.model uses; checkpoints unused).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402


def _rearrange(x: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """A minimal einops.rearrange: named axes, (groups), '...' and literal 1."""

    def parse(side: str) -> list[list[str]]:
        out: list[list[str]] = []
        group: list[str] | None = None
        for tok in side.replace("(", " ( ").replace(")", " ) ").split():
            if tok == "(":
                group = []
            elif tok == ")":
                assert group is not None
                out.append(group)
                group = None
            elif group is not None:
                group.append(tok)
            else:
                out.append([tok])
        return out

    left, right = (parse(s) for s in pattern.split("->"))
    n_ell = x.ndim - (len(left) - (1 if ["..."] in left else 0))
    known = dict(sizes)
    elems: list[str] = []
    split: list[int] = []
    dim = 0
    for g in left:
        if g == ["..."]:
            for j in range(n_ell):
                known[f"...{j}"] = x.shape[dim]
                elems.append(f"...{j}")
                split.append(x.shape[dim])
                dim += 1
            continue
        names = [a for a in g if a != "1"]
        unknown = [a for a in names if a not in known]
        prod = math.prod(known[a] for a in names if a in known)
        if unknown:
            known[unknown[0]] = x.shape[dim] // prod
        dim += 1
        for a in names:
            elems.append(a)
            split.append(known[a])
    x = x.reshape(split)
    order: list[str] = []
    final: list[int] = []
    for g in right:
        names = [f"...{j}" for j in range(n_ell)] if g == ["..."] else [a for a in g if a != "1"]
        order += names
        if g == ["..."]:
            final += [known[a] for a in names]
        else:
            final.append(math.prod(known[a] for a in names))
    return x.permute([elems.index(a) for a in order]).reshape(final)


def _ensure_deps() -> None:
    try:
        import einops  # noqa: F401
    except ImportError:
        mod = types.ModuleType("einops")
        mod.rearrange = _rearrange  # type: ignore[attr-defined]
        sys.modules["einops"] = mod
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        st = types.ModuleType("safetensors")
        stt = types.ModuleType("safetensors.torch")

        def _missing(*a: object, **k: object) -> None:
            raise RuntimeError("safetensors is not installed; this benchmark does not save")

        st.safe_open = _missing  # type: ignore[attr-defined]
        stt.save_file = _missing  # type: ignore[attr-defined]
        st.torch = stt  # type: ignore[attr-defined]
        sys.modules["safetensors"] = st
        sys.modules["safetensors.torch"] = stt


_ensure_deps()

from pemt.config import ModelConfig, load_config  # noqa: E402
from pemt.model import build_model  # noqa: E402
from pemt.train.losses import (  # noqa: E402
    clip_contrastive,
    correct_pair_loss,
    mask_segments,
    masked_embedding_loss,
    swap_pairs,
)


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_in), nn.GELU(), nn.LayerNorm(d_in), nn.Linear(d_in, d_out)
    )


class Objectives(nn.Module):
    """The objectives of pemt.train.trainer.TrainStep (same heads, same losses)."""

    def __init__(self, cfg: ModelConfig, ckpt: bool, chunk: int) -> None:
        super().__init__()
        d = cfg.hidden
        self.model = build_model(cfg)
        self.mask_visual = nn.Parameter(torch.zeros(cfg.visual_dim))
        self.mask_audio = nn.Parameter(torch.zeros(cfg.audio_dim))
        self.mep = nn.ModuleList([_mlp(d, cfg.visual_dim), _mlp(d, cfg.audio_dim),
                                  _mlp(d, cfg.visual_dim), _mlp(d, cfg.audio_dim)])  # fmt: skip
        self.pair = nn.Linear(d, 1)
        self.log_t = nn.Parameter(torch.tensor(math.log(0.07)))
        self.ckpt, self.chunk = ckpt, chunk

    def _cnn(self, encode: object, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        flat = x.reshape(1, b * t, *x.shape[2:])  # (1, B*T, ...) every segment is real here
        if not self.ckpt:
            y = encode(flat)  # type: ignore[operator]
        else:
            parts = [
                checkpoint(encode, flat[:, i : i + self.chunk], use_reentrant=False)
                for i in range(0, b * t, self.chunk)
            ]
            y = torch.cat(parts, dim=1)
        return y.reshape(b, t, -1)  # (B, T, dim)

    def forward(
        self, frames: torch.Tensor, audio: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        m = self.model
        b, t = frames.shape[:2]
        valid = torch.ones(b, t, dtype=torch.bool, device=frames.device)
        vf, af = self._cnn(m.encode_visual, frames), self._cnn(m.encode_audio, audio)
        mv = mask_segments(valid.cpu(), 0.3, g).to(frames.device)
        ma = mask_segments(valid.cpu(), 0.3, g).to(frames.device)
        v_in = torch.where(mv[..., None], self.mask_visual.to(vf.dtype), vf)
        a_in = torch.where(ma[..., None], self.mask_audio.to(af.dtype), af)
        perm = swap_pairs(b, 0.5, g).to(frames.device)
        out = m.forward_features(v_in, a_in[perm], valid, valid)
        tau = self.log_t.clamp(math.log(0.01), 0.0).exp()
        kw = dict(num_negatives=16, mode="content", temperature=tau, generator=g)
        mep = (
            masked_embedding_loss(self.mep[0](out["visual_tokens"]), vf, mv, valid, **kw)
            + masked_embedding_loss(
                self.mep[1](out["audio_tokens"]), af[perm], ma[perm], valid, **kw
            )
            + masked_embedding_loss(self.mep[2](out["fused_tokens"]), vf, mv, valid, **kw)
            + masked_embedding_loss(
                self.mep[3](out["fused_tokens"]), af[perm], ma[perm], valid, **kw
            )
        ) / 4
        is_pair = perm == torch.arange(b, device=perm.device)
        pair = correct_pair_loss(self.pair(out["embedding"].float()).squeeze(-1), is_pair)
        inv = torch.argsort(perm)
        clip = clip_contrastive(out["audio_embedding"][inv], out["visual_embedding"], tau)
        return mep + pair + clip


def _inputs(cfg: ModelConfig, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    md = cfg.media
    t, f, s = md.num_segments, md.frames_per_segment, md.image_size
    frames = torch.randint(0, 256, (b, t, f, s, s, 3), dtype=torch.uint8, device=device)
    audio = torch.randn(b, t, md.n_mels, md.audio_frames_per_segment, device=device) * 2 - 6
    return frames, audio


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def run(cfg: ModelConfig, device: torch.device, b: int, ckpt: bool, chunk: int, steps: int,
        warmup: int, bf16: bool) -> dict[str, float]:  # fmt: skip
    """Train ``steps`` timed steps at batch ``b``; returns clips/s, step seconds, peak GiB."""
    torch.manual_seed(0)
    net = Objectives(cfg, ckpt, chunk).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=1e-4,
                            amsgrad=True)  # fmt: skip
    frames, audio = _inputs(cfg, b, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = 0.0
    try:
        for i in range(warmup + steps):
            if i == warmup:
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = net(frames, audio, torch.Generator().manual_seed(i))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"loss is {float(loss.detach())}")
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
        return {"clips_per_s": b * steps / dt, "step_s": dt / steps, "peak_gib": peak}
    finally:
        del net, opt, frames, audio
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def largest_batch(cfg: ModelConfig, device: torch.device, ckpt: bool, chunk: int, bf16: bool,
                  cap: int) -> tuple[int, dict[str, float] | None]:  # fmt: skip
    """Double the batch until a training step runs out of memory (or ``cap``)."""
    b, best, stats = 1, 0, None
    while b <= cap:
        try:
            stats = run(cfg, device, b, ckpt, chunk, steps=1, warmup=1, bf16=bf16)
            best = b
            print(f"  batch {b:4d} ckpt={ckpt}: ok, {stats['peak_gib']:.1f} GiB, "
                  f"{stats['clips_per_s']:.1f} clips/s", file=sys.stderr, flush=True)  # fmt: skip
        except Exception as e:
            if not _is_oom(e):
                raise
            print(f"  batch {b:4d} ckpt={ckpt}: out of memory", file=sys.stderr, flush=True)
            break
        b *= 2
    return best, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seconds", type=float, default=30.0, help="clip length (num_segments)")
    ap.add_argument("--batch", type=int, default=8, help="batch for the throughput rows")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per row")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=64, help="segments per checkpointed CNN chunk")
    ap.add_argument("--max-batch", type=int, default=1024, help="cap of the doubling search")
    ap.add_argument("--no-search", action="store_true", help="skip the largest-batch search")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="CPU: torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    cfg = load_config(args.config)
    segs = max(1, round(args.seconds / cfg.media.segment_seconds))
    cfg = cfg.replace(media={"num_segments": segs})
    bf16 = not args.no_bf16 and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    cap = args.max_batch
    if device.type != "cuda":  # a smoke test: keep it short
        cap, args.batch, args.steps, args.warmup = min(cap, 2), min(args.batch, 2), 1, 1
    print(f"# PEMT training on {name}: config {cfg.name}, {segs} x {cfg.media.segment_seconds:g}-s "
          f"segments, torch {torch.__version__}, bf16 autocast {bf16}\n", flush=True)  # fmt: skip

    rows = []
    for ckpt in (False, True):
        try:
            r = run(cfg, device, args.batch, ckpt, args.chunk, args.steps, args.warmup, bf16)
            rows.append((ckpt, args.batch, r))
        except Exception as e:
            if not _is_oom(e):
                raise
            rows.append((ckpt, args.batch, None))
    search = {}
    if not args.no_search:
        for ckpt in (False, True):
            search[ckpt] = largest_batch(cfg, device, ckpt, args.chunk, bf16, cap)

    print("| activation checkpointing | batch | training clips/s | step (s) | peak memory (GiB) |")
    print("| --- | --- | --- | --- | --- |")
    for ckpt, b, r in rows:
        if r is None:
            print(f"| {'yes' if ckpt else 'no'} | {b} | out of memory | | |")
        else:
            print(f"| {'yes' if ckpt else 'no'} | {b} | {r['clips_per_s']:.2f} | "
                  f"{r['step_s']:.3f} | {r['peak_gib']:.2f} |")  # fmt: skip
    for ckpt, (best, stats) in search.items():
        note = f" (search capped at {cap})" if best >= cap else ""
        extra = (f"{stats['clips_per_s']:.2f} | {stats['step_s']:.3f} | {stats['peak_gib']:.2f}"
                 if stats else " | | ")  # fmt: skip
        print(f"| {'yes' if ckpt else 'no'} | largest: {best}{note} | {extra} |")
    print("\n(largest-batch rows: one timed step after one warm-up step at that batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
