"""PEMT: the whole model, from uint8 frames and log-mel audio to clip embeddings.

Per batch row, one window of T one-second segments (``pemt.spec.model_inputs``)::

    frames (B,T,F,S,S,3) uint8 -> visual CNN -> (B,T,visual_dim) -> Linear+LN -> (B,T,D)
    audio  (B,T,M,A) log-mel   -> audio CNN  -> (B,T,audio_dim)  -> Linear+LN -> (B,T,D)
    [BOS_v, visual] + positions -> visual transformer -> (B,1+T,D)
    [BOS_a, audio]  + positions -> audio transformer  -> (B,1+T,D)
    [BOS_mm, visual tokens, audio tokens] + token types -> multimodal transformer -> (B,1+2T,D)

Outputs are the ``pemt.spec.model_outputs`` names. Padded segments and a missing modality are
``False`` in ``visual_mask`` / ``audio_mask``: their features are replaced by zeros, they are
masked as attention keys, and their output tokens are zero, so their content never changes any
output. BOS tokens are always valid, so an all-masked modality gives finite outputs.
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
from pemt.model.transformer import Transformers

__all__ = ["PEMT", "build_model", "fold"]


class PEMT(nn.Module):
    """Parameter-efficient multimodal transformer (AVBERT shapes, ``cfg.sharing`` between the
    three transformers). ``forward`` returns a dict keyed by ``pemt.spec.model_outputs`` names."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"PEMT needs a pemt.config.ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.folded = False  # set by fold(): projections are plain dense matrices
        d, t = cfg.hidden, cfg.media.num_segments
        self.visual_cnn = VisualResNet(cfg.visual_width, cfg.visual_blocks)
        self.audio_cnn = AudioResNet(cfg.audio_width, cfg.audio_blocks)
        visual_linear, audio_linear = nn.Linear(cfg.visual_dim, d), nn.Linear(cfg.audio_dim, d)
        for lin in (visual_linear, audio_linear):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.visual_proj = nn.Sequential(visual_linear, nn.LayerNorm(d))
        self.audio_proj = nn.Sequential(audio_linear, nn.LayerNorm(d))
        # embeddings: a learned BOS and learned positions per stream (BOS at position 0),
        # and for the multimodal input a BOS plus token types (0 BOS, 1 visual, 2 audio)
        self.visual_bos = nn.Parameter(torch.zeros(d))
        self.visual_pos = nn.Parameter(torch.zeros(1 + t, d))
        self.audio_bos = nn.Parameter(torch.zeros(d))
        self.audio_pos = nn.Parameter(torch.zeros(1 + t, d))
        self.multimodal_bos = nn.Parameter(torch.zeros(d))
        self.multimodal_type = nn.Parameter(torch.zeros(3, d))
        self.drop = nn.Dropout(cfg.dropout)
        self.transformers = Transformers(cfg)
        for p in (self.visual_bos, self.visual_pos, self.audio_bos, self.audio_pos):
            nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.multimodal_bos, std=0.02)
        nn.init.normal_(self.multimodal_type, std=0.02)

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
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        bos: torch.Tensor,
        pos: torch.Tensor,
        modality: str,
    ) -> torch.Tensor:
        """x (B, T, D) projected features, valid (B, T) -> (B, 1+T, D) stream transformer out."""
        t = x.shape[1]
        x = torch.cat([bos.expand(x.shape[0], 1, -1), x], dim=1) + pos[: 1 + t]  # (B, 1+T, D)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)  # (B, 1+T), BOS valid
        return self.transformers(self.drop(x), valid, modality)

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
        if vf.shape[1] > cfg.media.num_segments:
            raise ValueError(
                f"{vf.shape[1]} segments > num_segments={cfg.media.num_segments}; "
                "cut the clip into windows (pemt.media.iter_windows)"
            )

    def forward_features(
        self,
        visual_features: torch.Tensor,
        audio_features: torch.Tensor,
        visual_mask: torch.Tensor,
        audio_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """CNN features (B, T, visual_dim) / (B, T, audio_dim), masks (B, T) bool (True = real
        segment) -> dict of spec outputs: embeddings (B, D), tokens (B, T, D)."""
        if not torch.jit.is_tracing():  # static shapes; keep TracerWarnings out of export
            self._check(visual_features, audio_features, visual_mask, audio_mask)
        vm, am = visual_mask.bool(), audio_mask.bool()  # (B, T)
        zero = torch.zeros((), dtype=visual_features.dtype, device=visual_features.device)
        v = torch.where(vm[..., None], visual_features, zero)  # padding content never enters
        a = torch.where(am[..., None], audio_features, zero)
        v = self._stream(self.visual_proj(v), vm, self.visual_bos, self.visual_pos, "visual")
        a = self._stream(self.audio_proj(a), am, self.audio_bos, self.audio_pos, "audio")
        t = vm.shape[1]
        v_tok, a_tok = v[:, 1:], a[:, 1:]  # (B, T, D) each
        types = self.multimodal_type
        bos = (self.multimodal_bos + types[0]).expand(v.shape[0], 1, -1)  # (B, 1, D)
        x = torch.cat([bos, v_tok + types[1], a_tok + types[2]], dim=1)  # (B, 1+2T, D)
        valid = torch.cat([torch.ones_like(vm[:, :1]), vm, am], dim=1)  # (B, 1+2T)
        x = self.transformers(self.drop(x), valid, "multimodal")  # (B, 1+2T, D)
        mv, ma = vm[..., None].to(x.dtype), am[..., None].to(x.dtype)  # (B, T, 1)
        # fused token: mean of the segment's valid visual and audio multimodal tokens (0 if none)
        fused = (x[:, 1 : 1 + t] * mv + x[:, 1 + t :] * ma) / (mv + ma).clamp(min=1.0)
        return {
            "embedding": F.normalize(x[:, 0], dim=-1),
            "audio_embedding": F.normalize(a[:, 0], dim=-1),
            "visual_embedding": F.normalize(v[:, 0], dim=-1),
            "audio_tokens": a_tok * ma,
            "visual_tokens": v_tok * mv,
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
    """A copy of ``model`` whose factored projections are plain ``nn.Linear`` (W_m = U R_m V_m,
    one per transformer, ``matrix_exp`` evaluated into constants). Same outputs to fp32
    tolerance. A model without factored projections comes back as an unchanged copy."""
    if not isinstance(model, PEMT):
        raise TypeError(f"fold needs a PEMT model, got {type(model).__name__}")
    folded = copy.deepcopy(model)
    folded.transformers.fold_()
    folded.folded = True
    return folded
