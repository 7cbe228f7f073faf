"""PEMT: the whole model, from uint8 frames and log-mel audio to clip embeddings, computed as
AVBERT (``models/avbert.py``, mid fusion) computes it.

Per batch row, one window of T segments (``pemt.spec.model_inputs``)::

    frames (B,T,F,S,S,3) uint8 -> visual CNN -> (B,T,visual_dim) -> Linear -> LN -> (B,T,D)
    audio  (B,T,M,A) log-mel   -> audio CNN  -> (B,T,audio_dim)  -> Linear -> LN -> (B,T,D)
    [start_v, visual] + positions 0..T -> LN -> visual transformer -> V (B,1+T,D)
    [start_a, audio]  + positions 0..T -> LN -> audio transformer  -> A (B,1+T,D)
    [V, A] + positions [0..T, 0..T] + token types [0]*(1+T) + [1]*(1+T) -> LN
        -> multimodal transformer -> M (B,2+2T,D); M[:, 0] and M[:, 1+T] are the start tokens

Outputs (``pemt.spec.model_outputs``): ``embedding`` = normalize(M[:, 0] + M[:, 1+T]), the two
multimodal start tokens, each a summary of the whole window seen from one stream;
``visual_embedding`` / ``audio_embedding`` = normalize(V[:, 0]) / normalize(A[:, 0]);
``visual_tokens`` = V[:, 1:], ``audio_tokens`` = A[:, 1:], ``fused_tokens`` = the mean of a
segment's two multimodal tokens M[:, 1+t] and M[:, 2+T+t]. Why these: docs/ARCHITECTURE.md.

Padded segments and a missing modality are ``False`` in ``visual_mask`` / ``audio_mask`` (AVBERT
has no masks: a full window computes exactly what it computes): their features are replaced by
zeros, they are masked as attention keys, and their output tokens are zero, so their content
never changes any output. Start tokens are always valid, so an all-masked modality gives finite
outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pemt.config import ModelConfig
from pemt.model.cnn import AudioResNet, VisualResNet
from pemt.model.transformer import LN_EPS, Transformers

__all__ = ["PEMT", "Embeddings", "build_model", "fold"]


class Embeddings(nn.Module):
    """AVBERT's ``BertEmbeddings``: tokens + learned positions (+ token types), LayerNorm,
    dropout. The input is ``halves`` streams of equal length laid end to end; each restarts
    its positions at 0 and, with ``types``, half ``i`` gets token type ``i``."""

    def __init__(self, rows: int, d: int, dropout: float, types: int = 0) -> None:
        super().__init__()
        self.position = nn.Embedding(rows, d)
        nn.init.normal_(self.position.weight, std=0.02)
        self.token_type: nn.Embedding | None = None
        if types:
            self.token_type = nn.Embedding(types, d)
            nn.init.normal_(self.token_type.weight, std=0.02)
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, halves: int = 1) -> torch.Tensor:
        """x (B, N, D), N = halves * n -> (B, N, D)."""
        n = x.shape[1] // halves
        x = x + self.position.weight[:n].repeat(halves, 1)  # positions 0..n-1 per half
        if self.token_type is not None:
            x = x + self.token_type.weight[:halves].repeat_interleave(n, dim=0)  # (N, D)
        return self.drop(self.norm(x))


class PEMT(nn.Module):
    """Parameter-efficient multimodal transformer (AVBERT's architecture, ``cfg.sharing``
    between the three transformers). ``forward`` returns a dict keyed by
    ``pemt.spec.model_outputs`` names."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"PEMT needs a pemt.config.ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.folded = False  # set by fold(): no matrix exponentials left
        d = cfg.hidden
        self.visual_cnn = VisualResNet(cfg.visual_width, cfg.visual_blocks)
        self.audio_cnn = AudioResNet(cfg.audio_width, cfg.audio_blocks)
        self.visual_fc, self.audio_fc = nn.Linear(cfg.visual_dim, d), nn.Linear(cfg.audio_dim, d)
        for lin in (self.visual_fc, self.audio_fc):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.visual_norm = nn.LayerNorm(d, eps=LN_EPS)
        self.audio_norm = nn.LayerNorm(d, eps=LN_EPS)
        # start tokens (AVBERT's summary_encoding.bos_embeddings): row 0 visual, row 1 audio
        self.start = nn.Embedding(2, d)
        nn.init.normal_(self.start.weight, std=0.02)
        self.visual_embed = Embeddings(cfg.positions, d, cfg.dropout)
        self.audio_embed = Embeddings(cfg.positions, d, cfg.dropout)
        self.multi_embed = Embeddings(cfg.positions, d, cfg.dropout, types=2)
        self.transformers = Transformers(cfg)

    # --- CNNs: one segment at a time, batched over (B, T) -----------------------------------

    def encode_visual(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """frames uint8 (B, T, F, S, S, 3) RGB -> (B, T, visual_dim). Normalizes inside.
        With ``mask`` (B, T) bool, only real segments are encoded (see ``_per_segment``)."""
        m = self.cfg.media

        def cnn(x: torch.Tensor) -> torch.Tensor:  # (N, F, S, S, 3) uint8 -> (N, visual_dim)
            x = (x.float() / 255.0 - m.mean) / m.std
            return self.visual_cnn(rearrange(x, "n f h w c -> n c f h w"))

        return _per_segment(cnn, frames, mask, self.cfg.visual_dim)

    def encode_audio(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """audio float32 log-mel (B, T, n_mels, A) -> (B, T, audio_dim).
        With ``mask`` (B, T) bool, only real segments are encoded (see ``_per_segment``)."""

        def cnn(x: torch.Tensor) -> torch.Tensor:  # (N, n_mels, A) -> (N, audio_dim)
            return self.audio_cnn(rearrange(x.float(), "n m a -> n 1 m a"))

        return _per_segment(cnn, audio, mask, self.cfg.audio_dim)

    # --- transformers ---------------------------------------------------------------------

    def _stream(
        self, x: torch.Tensor, valid: torch.Tensor, row: int, modality: str
    ) -> torch.Tensor:
        """x (B, T, D) projected features, valid (B, T) -> (B, 1+T, D) stream transformer out."""
        start = self.start.weight[row].expand(x.shape[0], 1, -1)  # (B, 1, D)
        embed = self.visual_embed if row == 0 else self.audio_embed
        x = embed(torch.cat([start, x], dim=1))  # (B, 1+T, D)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)  # (B, 1+T), start valid
        return self.transformers(x, valid, modality)

    def _check(
        self, vf: torch.Tensor, af: torch.Tensor, vm: torch.Tensor, am: torch.Tensor
    ) -> None:
        cfg = self.cfg
        bt = vf.shape[:2]
        if vf.ndim != 3 or af.ndim != 3 or af.shape[:2] != bt or vm.shape != bt or am.shape != bt:
            raise ValueError(
                "expected features (B, T, dim) and masks (B, T) for the same B and T, got "
                f"visual {tuple(vf.shape)}, audio {tuple(af.shape)}, "
                f"visual_mask {tuple(vm.shape)}, audio_mask {tuple(am.shape)}"
            )
        if vf.shape[-1] != cfg.visual_dim or af.shape[-1] != cfg.audio_dim:
            raise ValueError(
                f"features must end in visual_dim={cfg.visual_dim} / audio_dim={cfg.audio_dim}, "
                f"got {tuple(vf.shape)} / {tuple(af.shape)}"
            )
        if vf.shape[1] > cfg.positions - 1:
            raise ValueError(
                f"{vf.shape[1]} segments > positions - 1 = {cfg.positions - 1}; "
                "cut the clip into windows (pemt.media.iter_windows)"
            )

    def streams(
        self,
        visual_features: torch.Tensor,
        audio_features: torch.Tensor,
        visual_mask: torch.Tensor,
        audio_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three transformers' outputs, as AVBERT returns them: V (B, 1+T, D), A (B, 1+T, D)
        and M (B, 2+2T, D), from CNN features and masks (B, T) bool (True = real segment)."""
        if not torch.jit.is_tracing():  # static shapes; keep TracerWarnings out of export
            self._check(visual_features, audio_features, visual_mask, audio_mask)
        vm, am = visual_mask.bool(), audio_mask.bool()  # (B, T)
        zero = torch.zeros((), dtype=visual_features.dtype, device=visual_features.device)
        v = torch.where(vm[..., None], visual_features, zero)  # padding content never enters
        a = torch.where(am[..., None], audio_features, zero)
        v = self._stream(self.visual_norm(self.visual_fc(v)), vm, 0, "visual")  # (B, 1+T, D)
        a = self._stream(self.audio_norm(self.audio_fc(a)), am, 1, "audio")  # (B, 1+T, D)
        x = self.multi_embed(torch.cat([v, a], dim=1), halves=2)  # (B, 2+2T, D)
        ones = torch.ones_like(vm[:, :1])
        valid = torch.cat([ones, vm, ones, am], dim=1)  # (B, 2+2T), both start tokens valid
        return v, a, self.transformers(x, valid, "multimodal")

    def forward_features(
        self,
        visual_features: torch.Tensor,
        audio_features: torch.Tensor,
        visual_mask: torch.Tensor,
        audio_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """CNN features (B, T, visual_dim) / (B, T, audio_dim), masks (B, T) bool (True = real
        segment) -> dict of spec outputs: embeddings (B, D), tokens (B, T, D)."""
        v, a, x = self.streams(visual_features, audio_features, visual_mask, audio_mask)
        t = visual_mask.shape[1]
        mv = visual_mask.bool()[..., None].to(x.dtype)  # (B, T, 1)
        ma = audio_mask.bool()[..., None].to(x.dtype)
        # fused token: mean of the segment's valid visual and audio multimodal tokens (0 if none)
        fused = (x[:, 1 : 1 + t] * mv + x[:, 2 + t :] * ma) / (mv + ma).clamp(min=1.0)
        return {
            "embedding": F.normalize(x[:, 0] + x[:, 1 + t], dim=-1),
            "audio_embedding": F.normalize(a[:, 0], dim=-1),
            "visual_embedding": F.normalize(v[:, 0], dim=-1),
            "audio_tokens": a[:, 1:] * ma,
            "visual_tokens": v[:, 1:] * mv,
            "fused_tokens": fused,
        }

    def forward(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor,
        visual_mask: torch.Tensor,
        audio_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """frames uint8 (B,T,F,S,S,3), audio (B,T,n_mels,A), masks (B,T) bool -> spec outputs.

        In training, padded segments skip the CNNs (less work, and no padding in BatchNorm
        batch statistics); in eval every segment is encoded, with no data-dependent shapes."""
        vm, am = (visual_mask, audio_mask) if self.training else (None, None)
        v, a = self.encode_visual(frames, vm), self.encode_audio(audio, am)
        return self.forward_features(v, a, visual_mask, audio_mask)


def _per_segment(
    cnn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    mask: torch.Tensor | None,
    dim: int,
) -> torch.Tensor:
    """Run a per-segment ``cnn`` over x (B, T, ...) -> (B, T, dim). With ``mask`` (B, T) bool only
    the True segments run and the rest are zeros: boolean indexing has a data-dependent shape,
    so export and serving pass no mask (padding is masked in the transformers anyway)."""
    b = x.shape[0]
    if mask is None:
        y = cnn(rearrange(x, "b t ... -> (b t) ..."))  # (B*T, dim)
        return rearrange(y, "(b t) d -> b t d", b=b)
    mask = mask.bool()
    if not mask.any():  # nothing real: no CNN call (BatchNorm cannot train on zero samples)
        return x.new_zeros((*mask.shape, dim), dtype=torch.float32)
    y = cnn(x[mask])  # (N, dim), N = mask.sum()
    out = y.new_zeros((*mask.shape, dim))  # (B, T, dim)
    out[mask] = y
    return out


def build_model(cfg: ModelConfig) -> PEMT:
    """A freshly initialized model for ``cfg`` (``pemt.config.get_config(name)`` gives one)."""
    return PEMT(cfg)


@torch.no_grad()
def fold(model: PEMT) -> PEMT:
    """A copy of ``model`` whose factored projections have ``W_m = U B_m^T`` precomputed (the
    matrix exponentials evaluated into constants; ``V_m`` and the normalization stay). Same
    outputs to fp32 tolerance. A model without factored projections comes back as an unchanged
    copy."""
    if not isinstance(model, PEMT):
        raise TypeError(f"fold needs a PEMT model, got {type(model).__name__}")
    folded = copy.deepcopy(model)
    folded.transformers.fold_()
    folded.folded = True
    return folded
