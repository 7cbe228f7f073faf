"""The trainer: objectives on PEMT, DDP under torchrun, checkpoints that resume exactly.

One optimizer step = ``accum`` micro-batches. Each micro-batch (:class:`TrainStep`):

1. CNN features of the *valid* segments only (padding costs nothing), optionally with activation
   checkpointing in chunks of segments;
2. masked embedding prediction: ``mask_ratio`` of each row's valid segments are replaced by a
   learned mask vector (in CNN feature space) before ``forward_features``; heads on the visual,
   audio and fused tokens predict the CNN feature, InfoNCE against negatives drawn uniform or
   content-aware (:mod:`pemt.train.losses`);
3. correct pair prediction: about ``pair_fraction`` of the rows get another clip's audio; a head on
   the multimodal ``embedding`` says whether audio and video belong together;
4. clip-level symmetric InfoNCE between ``visual_embedding`` and ``audio_embedding`` (aligned
   through the swap), learnable or fixed temperature;
5. ``recipe="robust"`` only: augmentation consistency. The loader hands two differently edited
   views of every window (:mod:`pemt.edits`: re-encode damage, crop, padding, flip, grey,
   colour, overlay, picture-in-picture, frame rate, speed, trim, sound gain/noise/band loss;
   each view edits the picture, the sound or both; the first view lightly,
   ``first_view_edits``); the objectives above train on the first view, and :func:`pemt.train.losses.augmentation_consistency`
   pulls the two views' ``embedding``, ``visual_embedding`` and ``audio_embedding`` together
   (unmasked, unswapped forwards) against the other windows of the batch, weighted
   ``w_cons_fused``, ``w_cons_visual``, ``w_cons_audio``. By default the second view is a
   target without gradient (``consistency_stopgrad``): its CNNs run forward only, and a robust
   step costs about 1.6x the paper's (bench/results/neardup.md).

``init`` starts from any PEMT checkpoint (one written by ``pemt train`` or ``pemt import
avbert``): its weights and config; the objectives' heads start fresh.

Randomness of masking, swapping and negative sampling comes from a generator seeded with
``(seed, step, rank, micro)``; dropout uses torch's global RNG, which is saved. Checkpoints:
``OUT/checkpoints/step-NNNNNNN.safetensors`` (model, :func:`pemt.save`) and
``step-NNNNNNN.train.pt`` (heads, optimizer, scheduler, loader positions and RNG of every rank;
read with ``torch.load(weights_only=True)``); ``OUT/latest`` names the newest. At the end
``OUT/model.safetensors`` holds the final weights. ``OUT/metrics.jsonl`` and ``OUT/tb``
(TensorBoard) get rank 0's metrics every ``log_every`` steps.

Launch: ``pemt train --config small --shards 'shards/shard-*.tar' --out runs/small``, or on N
GPUs ``torchrun --nproc-per-node N -m pemt.cli train ...`` (RANK/WORLD_SIZE from torchrun;
nccl on GPU, gloo on CPU). Resume with the same command plus ``--resume`` and the same number of
processes and ``--workers``.

Activation checkpointing (``activation_checkpointing``) recomputes the CNNs in the backward pass,
in chunks of ``checkpoint_chunk`` segments: BatchNorm then normalizes with per-chunk batch
statistics (the same as without it when a micro-batch has at most that many real segments) and
updates its running statistics twice per step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from pemt.config import ModelConfig
from pemt.train.losses import (
    NEGATIVE_MODES,
    augmentation_consistency,
    clip_contrastive,
    correct_pair_loss,
    mask_segments,
    masked_embedding_loss,
    swap_pairs,
)

__all__ = ["RECIPES", "PretrainHeads", "TrainConfig", "TrainStep", "encode_segments", "train"]

RECIPES = ("paper", "robust")  # robust = paper + augmentation consistency on edited views


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8  # clips per micro-batch per rank
    accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-4  # post-LN transformers from scratch collapsed at 1e-3 in our runs
    min_lr_ratio: float = 0.01  # cosine ends at lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    mask_ratio: float = 0.3
    num_negatives: int = 16
    negatives: str = "content"  # uniform | content
    sampling_temperature: float = 0.1  # content-aware: softmax(cosine / this)
    temperature: float = 0.07  # InfoNCE temperature (initial value when learned)
    learn_temperature: bool = True
    pair_fraction: float = 0.5
    w_mep: float = 1.0
    w_pair: float = 1.0
    w_clip: float = 1.0
    recipe: str = "paper"  # one of RECIPES
    w_cons_fused: float = 1.0  # robust: consistency weight on `embedding`
    w_cons_visual: float = 1.0  # ... on `visual_embedding`
    w_cons_audio: float = 1.0  # ... on `audio_embedding`
    consistency_temperature: float = 0.07
    # robust: the second view is a target without gradient (MoCo-style keys from the same
    # weights): its CNNs run forward only, a third of their training cost
    consistency_stopgrad: bool = True
    # robust: the first view draws each edit with this times its probability (pemt.edits
    # VIEW_EDITS; the paper's objectives train on it), the second with the full probability
    first_view_edits: float = 0.3
    init: str | None = None  # start from this PEMT checkpoint's weights
    checkpoint_every: int = 500
    keep: int = 3
    log_every: int = 10
    workers: int = 2
    # decoded windows kept for later epochs (MiB, over all workers of a rank); 0 = decode every
    # time. A dataset that fits is decoded once (the demo: 96 short clips, about 340 MiB)
    decode_cache_mb: int = 0
    shuffle_buffer: int = 256
    seed: int = 0
    activation_checkpointing: bool = False
    checkpoint_chunk: int = 64  # segments per checkpointed CNN chunk
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 = torch's default. 1 is far faster on a busy CPU
    bf16: bool = True  # autocast on GPU
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"--recipe {self.recipe!r} is not one of {list(RECIPES)}")
        if self.negatives not in NEGATIVE_MODES:
            raise ValueError(f"--negatives {self.negatives!r} is not one of {list(NEGATIVE_MODES)}")
        if self.decode_cache_mb < 0:
            raise ValueError(f"--decode-cache-mb must be 0 or more, got {self.decode_cache_mb}")
        if self.steps < 1 or self.batch_size < 1 or self.accum < 1:
            raise ValueError("--steps, --batch-size and --accum must be at least 1")
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"--mask-ratio must be in [0, 1), got {self.mask_ratio}")
        if self.batch_size < 2 and (self.w_clip or self.w_pair):
            raise ValueError("--batch-size must be at least 2 for the contrastive and pair losses")


# --- model side ---------------------------------------------------------------------------


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_in), nn.GELU(), nn.LayerNorm(d_in), nn.Linear(d_in, d_out)
    )


class PretrainHeads(nn.Module):
    """Training-only parameters: mask vectors, prediction heads, pair head, temperatures."""

    def __init__(self, cfg: ModelConfig, tcfg: TrainConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.mask_visual = nn.Parameter(torch.zeros(cfg.visual_dim))
        self.mask_audio = nn.Parameter(torch.zeros(cfg.audio_dim))
        self.mep_visual = _mlp(d, cfg.visual_dim)  # visual tokens -> visual CNN feature
        self.mep_audio = _mlp(d, cfg.audio_dim)
        self.mep_fused_visual = _mlp(d, cfg.visual_dim)  # fused multimodal tokens -> both
        self.mep_fused_audio = _mlp(d, cfg.audio_dim)
        self.pair = nn.Linear(d, 1)
        log_t = torch.tensor(math.log(tcfg.temperature))
        if tcfg.learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.clamp(math.log(0.01), math.log(1.0)).exp()


def encode_segments(
    encode: Any, x: torch.Tensor, valid: torch.Tensor, *, ckpt: bool = False, chunk: int = 64
) -> torch.Tensor:
    """Run a per-segment CNN (``model.encode_visual`` / ``encode_audio``) on the valid segments
    only: x (B, T, ...), valid (B, T) -> (B, T, dim), zeros where not valid."""
    b, t = valid.shape
    sel = x[valid]  # (N, ...)
    if len(sel) == 0:  # e.g. a batch of silent clips: run one padding segment, weight 0, so
        # that every parameter stays in the graph (DDP expects gradients for all of them)
        probe = encode(x[:1, :1])  # (1, 1, dim)
        return probe.new_zeros((b, t, probe.shape[-1])) + 0.0 * probe.sum()
    parts = []
    step = chunk if ckpt else len(sel)
    for i in range(0, len(sel), step):
        piece = sel[i : i + step][None]  # (1, n, ...)
        if ckpt and torch.is_grad_enabled():
            out = checkpoint(encode, piece, use_reentrant=False)
        else:
            out = encode(piece)
        parts.append(out[0])  # (n, dim)
    feats = torch.cat(parts)  # (N, dim)
    full = feats.new_zeros((b, t, feats.shape[-1]))
    full[valid] = feats
    return full  # (B, T, dim)


class TrainStep(nn.Module):
    """Model + heads; ``forward(batch, generator)`` returns the loss and its parts. Wrapping this
    (not the bare model) in DDP lets DDP see every parameter the losses touch."""

    heads: PretrainHeads

    def __init__(self, model: nn.Module, heads: PretrainHeads, tcfg: TrainConfig) -> None:
        super().__init__()
        self.model, self.heads, self.tcfg = model, heads, tcfg

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        tc, h = self.tcfg, self.heads
        m: Any = self.model  # a PEMT (or a module with its encode_*/forward_features API)
        vm, am = batch["visual_mask"].bool(), batch["audio_mask"].bool()  # (B, T)
        t_eff = int((vm | am).any(0).nonzero().max().item()) + 1 if bool((vm | am).any()) else 1
        vm, am = vm[:, :t_eff], am[:, :t_eff]  # trailing all-padding columns cost nothing
        frames, audio = batch["frames"][:, :t_eff], batch["audio"][:, :t_eff]
        ck: dict[str, Any] = dict(ckpt=tc.activation_checkpointing, chunk=tc.checkpoint_chunk)
        vfeat = encode_segments(m.encode_visual, frames, vm, **ck)  # (B, T, Dv)
        afeat = encode_segments(m.encode_audio, audio, am, **ck)  # (B, T, Da)
        b = len(vm)

        mask_v = mask_segments(vm.cpu(), tc.mask_ratio, generator).to(vm.device)  # (B, T)
        mask_a = mask_segments(am.cpu(), tc.mask_ratio, generator).to(am.device)
        v_in = torch.where(mask_v[..., None], h.mask_visual.to(vfeat.dtype), vfeat)
        a_in = torch.where(mask_a[..., None], h.mask_audio.to(afeat.dtype), afeat)

        perm = swap_pairs(b, tc.pair_fraction if tc.w_pair else 0.0, generator).to(vm.device)
        inv = torch.argsort(perm)  # audio row inv[i] holds clip i's audio
        a_in, am_sw, afeat_sw, mask_a_sw = a_in[perm], am[perm], afeat[perm], mask_a[perm]
        out = m.forward_features(v_in, a_in, vm, am_sw)

        tau = h.temperature()
        mep_kw: dict[str, Any] = dict(
            num_negatives=tc.num_negatives, mode=tc.negatives, temperature=tau,
            sampling_temperature=tc.sampling_temperature, generator=generator,
        )  # fmt: skip
        vt, at, ft = out["visual_tokens"], out["audio_tokens"], out["fused_tokens"]
        mep = (
            masked_embedding_loss(h.mep_visual(vt), vfeat, mask_v, vm, **mep_kw)
            + masked_embedding_loss(h.mep_audio(at), afeat_sw, mask_a_sw, am_sw, **mep_kw)
            + masked_embedding_loss(h.mep_fused_visual(ft), vfeat, mask_v, vm, **mep_kw)
            + masked_embedding_loss(h.mep_fused_audio(ft), afeat_sw, mask_a_sw, am_sw, **mep_kw)
        ) / 4

        both = vm.any(1) & am_sw.any(1)  # rows that hold both modalities
        is_pair = perm == torch.arange(b, device=perm.device)
        pair_logits = h.pair(out["embedding"].float()).squeeze(-1)  # (B,)
        if bool(both.any()):
            pair = correct_pair_loss(pair_logits[both], is_pair[both])
            pair_acc = ((pair_logits[both] > 0) == is_pair[both]).float().mean().item()
        else:
            pair, pair_acc = pair_logits.sum() * 0.0, float("nan")

        clips = vm.any(1) & am.any(1)  # clips with both modalities, audio taken from row inv
        if int(clips.sum()) >= 2:
            a_emb = out["audio_embedding"][inv][clips]
            v_emb = out["visual_embedding"][clips]
            clip = clip_contrastive(a_emb, v_emb, tau)
        else:
            clip = out["audio_embedding"].sum() * 0.0
        loss = tc.w_mep * mep + tc.w_pair * pair + tc.w_clip * clip
        parts = {
            "mep": float(mep.detach()),
            "pair": float(pair.detach()),
            "clip": float(clip.detach()),
            "pair_acc": pair_acc,
            "temperature": float(tau.detach()),
        }
        if tc.recipe == "robust":
            if "frames_b" not in batch:
                raise ValueError("recipe 'robust' needs a loader with views=True (frames_b, ...)")
            first = (vfeat, afeat, vm, am)
            cons, cparts = self._consistency(first, batch, ck)
            loss = loss + cons
            parts.update(cparts)
        return loss, parts

    def _consistency(
        self, first: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor], ck: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Augmentation consistency between the first view (CNN features already computed) and
        the second (``*_b`` keys), on the three clip vectors of unmasked forwards."""
        tc, m = self.tcfg, self.model
        vm_b, am_b = batch["visual_mask_b"].bool(), batch["audio_mask_b"].bool()
        t_b = (
            int((vm_b | am_b).any(0).nonzero().max().item()) + 1 if bool((vm_b | am_b).any()) else 1
        )
        vm_b, am_b = vm_b[:, :t_b], am_b[:, :t_b]
        with torch.no_grad() if tc.consistency_stopgrad else contextlib.nullcontext():
            vfeat_b = encode_segments(m.encode_visual, batch["frames_b"][:, :t_b], vm_b, **ck)
            afeat_b = encode_segments(m.encode_audio, batch["audio_b"][:, :t_b], am_b, **ck)
            out_b = m.forward_features(vfeat_b, afeat_b, vm_b, am_b)  # type: ignore[operator]
        vfeat, afeat, vm, am = first
        out_a = m.forward_features(vfeat, afeat, vm, am)  # type: ignore[operator]
        rows = {
            "embedding": (vm | am).any(1) & (vm_b | am_b).any(1),
            "visual_embedding": vm.any(1) & vm_b.any(1),
            "audio_embedding": am.any(1) & am_b.any(1),
        }
        weights = {"embedding": tc.w_cons_fused, "visual_embedding": tc.w_cons_visual,
                   "audio_embedding": tc.w_cons_audio}  # fmt: skip
        names = {"embedding": "cons_fused", "visual_embedding": "cons_visual",
                 "audio_embedding": "cons_audio"}  # fmt: skip
        total = out_a["embedding"].sum() * 0.0
        parts: dict[str, float] = {}
        for key, sel in rows.items():
            if weights[key] == 0 or int(sel.sum()) < 2:
                parts[names[key]] = float("nan")
                continue
            value = augmentation_consistency(
                out_a[key][sel], out_b[key][sel], tc.consistency_temperature
            )
            total = total + weights[key] * value
            parts[names[key]] = float(value.detach())
        return total, parts


# --- distributed, schedule, checkpoints ----------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False


def _init_distributed(device: torch.device) -> _Dist:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return _Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank, world, local, world > 1)


def _lr_lambda(tcfg: TrainConfig) -> Any:
    def f(step: int) -> float:
        if step < tcfg.warmup:
            return (step + 1) / max(1, tcfg.warmup)
        progress = (step - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * cos

    return f


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather(obj: Any, d: _Dist) -> list[Any]:
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def latest_checkpoint(out: Path) -> tuple[Path, Path] | None:
    """(weights, training state) of the newest checkpoint in ``out``, or None."""
    marker = out / "latest"
    if not marker.is_file():
        return None
    name = marker.read_text().strip()
    w, s = out / "checkpoints" / f"{name}.safetensors", out / "checkpoints" / f"{name}.train.pt"
    if not (w.is_file() and s.is_file()):
        raise ValueError(
            f"{marker} names {name}, but its files are missing in {out / 'checkpoints'}"
        )
    return w, s


def _save_checkpoint(
    out: Path, step: int, model: nn.Module, heads: PretrainHeads, opt: Any, sched: Any,
    loader_states: list[Any], rng_states: list[Any], tcfg: TrainConfig, d: _Dist,
) -> None:  # fmt: skip
    if d.rank != 0:
        return
    from pemt.model import save

    ckdir = out / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    save(model, ckdir / f"{name}.safetensors")  # type: ignore[arg-type]
    state = {
        "step": step,
        "heads": heads.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "loader": loader_states,
        "rng": rng_states,
        "world_size": d.world,
        "train_config": json.dumps(asdict(tcfg), sort_keys=True),
    }
    tmp = ckdir / f"{name}.train.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, ckdir / f"{name}.train.pt")
    marker_tmp = out / "latest.tmp"
    marker_tmp.write_text(name + "\n")
    os.replace(marker_tmp, out / "latest")
    names = sorted(p.name[: -len(".safetensors")] for p in ckdir.glob("step-*.safetensors"))
    for old in names[: -tcfg.keep] if tcfg.keep > 0 else []:
        for suffix in (".safetensors", ".train.pt"):
            (ckdir / f"{old}{suffix}").unlink(missing_ok=True)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


# --- the loop ------------------------------------------------------------------------------


def train(
    model_cfg: ModelConfig, shards: str, out: str | Path, tcfg: TrainConfig, *, resume: bool = False
) -> dict[str, Any]:
    """Train and return the last logged metrics. Under torchrun, every rank calls this."""
    from tqdm import tqdm

    from pemt.model import build_model
    from pemt.model import load as load_model
    from pemt.train.data import ShardLoader

    out = Path(out)
    if tcfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(tcfg.device)
    d = _init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    torch.manual_seed(tcfg.seed + d.rank)
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)

    model = build_model(model_cfg)
    if tcfg.init and not resume:
        start = load_model(tcfg.init)
        if start.folded:
            raise ValueError(
                f"--init {tcfg.init} holds folded (export-form) weights; start from the "
                "checkpoint that was trained or imported, before export"
            )
        if start.cfg != model_cfg:
            raise ValueError(
                f"--init {tcfg.init} was built with config {start.cfg.name!r}, which differs from "
                f"--config {model_cfg.name!r}; leave --config out to train the checkpoint's own"
            )
        model.load_state_dict(start.state_dict())
    heads = PretrainHeads(model_cfg, tcfg)
    start_step, state = 0, None
    if resume:
        found = latest_checkpoint(out)
        if found is None:
            raise ValueError(f"--resume: no checkpoint in {out} (no {out / 'latest'})")
        weights, state_path = found
        saved = load_model(weights)
        if saved.cfg != model_cfg:
            raise ValueError(
                f"--resume: checkpoint config {saved.cfg.name!r} differs from --config"
            )
        model.load_state_dict(saved.state_dict())
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["world_size"] != d.world:
            raise ValueError(
                f"--resume: checkpoint was written by {state['world_size']} ranks, now {d.world}; "
                "resume with the same number of processes"
            )
        heads.load_state_dict(state["heads"])
        start_step = int(state["step"])
    model.to(device).train()
    heads.to(device).train()
    step_module: nn.Module = TrainStep(model, heads, tcfg)
    if d.enabled:
        step_module = nn.parallel.DistributedDataParallel(
            step_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
    params = [p for p in step_module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=tcfg.lr, betas=(0.9, 0.98), weight_decay=tcfg.weight_decay, amsgrad=True
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(tcfg))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][d.rank], device)

    loader = ShardLoader(
        shards, model_cfg.media, batch_size=tcfg.batch_size, seed=tcfg.seed,
        num_workers=tcfg.workers, rank=d.rank, world_size=d.world,
        shuffle_buffer=tcfg.shuffle_buffer, train=True,
        state=state["loader"][d.rank] if state is not None else None,
        views=tcfg.recipe == "robust", view_scales=(tcfg.first_view_edits, 1.0),
        decode_cache_bytes=tcfg.decode_cache_mb << 20,
    )  # fmt: skip
    batches = iter(loader)

    stop = {"flag": False}

    def _on_term(signum: int, frame: Any) -> None:
        stop["flag"] = True

    old_handler = None
    with contextlib.suppress(ValueError):  # not the main thread: no signal handling
        old_handler = signal.signal(signal.SIGTERM, _on_term)

    writer = None
    metrics_file = None
    if d.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(model_cfg.to_json() + "\n")
        metrics_file = open(out / "metrics.jsonl", "a")  # noqa: SIM115 (closed in finally)
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        except ImportError:
            print("tensorboard not installed: metrics go to metrics.jsonl only", file=sys.stderr)
    bar = tqdm(
        total=tcfg.steps, initial=start_step, desc="train", unit="step",
        disable=not tcfg.progress or d.rank != 0, file=sys.stderr, dynamic_ncols=True,
    )  # fmt: skip
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and tcfg.bf16
        else contextlib.nullcontext()
    )

    def save_now(step: int) -> None:
        loader_states = _gather(loader.state_dict(), d)
        rng_states = _gather(_rng_state(device), d)
        _save_checkpoint(out, step, model, heads, opt, sched, loader_states, rng_states, tcfg, d)

    last: dict[str, Any] = {}
    step = start_step
    acc: dict[str, float] = {}
    n_acc = 0
    clips = 0
    t0 = time.perf_counter()
    exit_reason = "done"
    try:
        while step < tcfg.steps:
            opt.zero_grad(set_to_none=True)
            for micro in range(tcfg.accum):
                batch = _to_device(next(batches), device)
                gen = torch.Generator().manual_seed(
                    ((tcfg.seed * 1_000_003 + step) * 4099 + d.rank) * 131 + micro
                )
                sync = (
                    step_module.no_sync()  # type: ignore[operator]
                    if d.enabled and micro < tcfg.accum - 1
                    else contextlib.nullcontext()
                )
                with sync:
                    with autocast:
                        loss, parts = step_module(batch, gen)
                    (loss / tcfg.accum).backward()
                clips += len(batch["visual_mask"])
                for k, v in {"loss": float(loss.detach()), **parts}.items():
                    acc[k] = acc.get(k, 0.0) + v
                n_acc += 1
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip))
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            if step % tcfg.log_every == 0 or step == tcfg.steps:
                dt = time.perf_counter() - t0
                last = {k: v / n_acc for k, v in acc.items()}
                last.update(
                    step=step, lr=sched.get_last_lr()[0], grad_norm=grad_norm,
                    clips_per_s=clips * d.world / dt if dt > 0 else 0.0,
                    bad_samples=loader.bad_samples, shard_errors=loader.shard_errors,
                    epoch=loader.epoch, time=time.time(),
                )  # fmt: skip
                acc, n_acc, clips, t0 = {}, 0, 0, time.perf_counter()
                if d.rank == 0:
                    assert metrics_file is not None
                    metrics_file.write(json.dumps(last) + "\n")
                    metrics_file.flush()
                    if writer is not None:
                        for k, v in last.items():
                            if k not in ("step", "time") and isinstance(v, float | int):
                                writer.add_scalar(f"train/{k}", v, step)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", clip=f"{last['clip']:.3f}")
            flag = torch.tensor([1.0 if stop["flag"] else 0.0], device=device)
            if d.enabled:
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0:
                save_now(step)
                exit_reason = "sigterm"
                if d.rank == 0:
                    bar.write(f"SIGTERM: saved step {step} to {out}; continue with --resume")
                break
            if step % tcfg.checkpoint_every == 0 and step < tcfg.steps:
                save_now(step)
        if exit_reason == "done":
            save_now(step)
            if d.rank == 0:
                from pemt.model import save

                save(model, out / "model.safetensors")
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if metrics_file is not None:
            metrics_file.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        if d.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    last["exit"] = exit_reason
    last["final_step"] = step
    return last
