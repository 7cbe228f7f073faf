"""The visual, audio and multimodal transformers and the parameter sharing between them.

One ``Transformers`` module holds all three, because in the sharing modes ``layers+partial`` and
``full`` they share weights; the modality is an argument of ``forward``. Post-LN layers (BERT):
``x = LN1(x + Attn(x)); x = LN2(x + FFN(x))``, GELU, key-padding masks.

Sharing modes (``cfg.sharing``), as in AVBERT (Lee et al., ICLR 2021), with the transformer
parameters at paper size (hidden 768, FFN 3072, 6 layers; ``pemt params`` prints them)::

    none             127.6M   3 transformers x cfg.layers distinct layers, plain nn.Linear
    layers            21.3M   one layer per transformer, reused across depth (ALBERT)
    layers+partial    31.9M   layers + every projection factored as below, U shared by the
                              three transformers, private part full rank: r = min(d_in, d_out)
    full               3.8M   layers+partial with private rank r = cfg.rank (paper: 128)

``layers+partial`` is ``full`` at full rank, so the four modes differ only in structure and
rank. At full rank it has *more* parameters than ``layers`` (the paper reports 15M): each
transformer keeps a full V_m plus an r x r A_m, and one U is added. R_m adds no expressive power
at full rank (V_m could absorb it); it is kept so the formula is the same in every factored mode.

In ``layers+partial`` and ``full`` the LayerNorms are shared by the three transformers too;
position and token-type embeddings (in ``PEMT``) never are.

Factored projection for transformer m (``Factored``)::

    y = U (R_m (V_m x)) + b     V_m: d_in -> r, no bias, private
                                R_m = matrix_exp(A_m - A_m^T), r x r orthogonal, private
                                U: r -> d_out with bias b, shared by the three transformers

Deliberate deviation from AVBERT's ``FactorLinear``: AVBERT L2-normalizes ``V_m x`` before the
rotation. We do not, so ``U R_m V_m`` folds exactly into one dense matrix per transformer
(``Factored.fold``), which is what export needs (one GEMM per projection, no ``matrix_exp`` op).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pemt.config import ModelConfig

__all__ = ["MODALITIES", "Dense", "Factored", "Layer", "Transformers"]

MODALITIES = ("visual", "audio", "multimodal")


class Dense(nn.Module):
    """One plain ``nn.Linear`` per transformer: y = W_m x + b_m."""

    def __init__(self, d_in: int, d_out: int, linears: dict[str, nn.Linear] | None = None) -> None:
        super().__init__()
        if linears is None:
            linears = {m: nn.Linear(d_in, d_out) for m in MODALITIES}
            for lin in linears.values():
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
        self.linear = nn.ModuleDict(linears)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.linear[modality](x)


class Factored(nn.Module):
    """y = U (R_m (V_m x)) + b with U, b shared and V_m, A_m private (see the module docstring)."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        # U V has entries of std sqrt(r) * s^2; pick s so that it matches a dense layer's 0.02
        s = math.sqrt(0.02 / math.sqrt(rank))
        self.u = nn.Linear(rank, d_out)  # U and b: shared by the three transformers
        nn.init.normal_(self.u.weight, std=s)
        nn.init.zeros_(self.u.bias)
        self.v = nn.ParameterDict(  # V_m: (r, d_in), private
            {m: nn.Parameter(torch.randn(rank, d_in) * s) for m in MODALITIES}
        )
        self.a = nn.ParameterDict(  # A_m: (r, r), private; A_m = 0 -> R_m = I at init
            {m: nn.Parameter(torch.zeros(rank, rank)) for m in MODALITIES}
        )

    def rotation(self, modality: str) -> torch.Tensor:
        a = self.a[modality]
        return torch.matrix_exp(a - a.T)  # (r, r), orthogonal

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        h = F.linear(x, self.v[modality])  # (..., r) = V_m x
        h = h @ self.rotation(modality).T  # (..., r) = R_m V_m x, for each row
        return self.u(h)  # (..., d_out)

    @torch.no_grad()
    def fold(self) -> Dense:
        """The same map as one dense ``nn.Linear`` per transformer: W_m = U R_m V_m, bias b."""
        u = self.u.weight  # (d_out, r)
        d_out, d_in = u.shape[0], self.v[MODALITIES[0]].shape[1]
        linears = {}
        for m in MODALITIES:
            lin = nn.Linear(d_in, d_out, device=u.device, dtype=u.dtype)
            lin.weight.copy_(u @ self.rotation(m) @ self.v[m])  # (d_out, d_in)
            lin.bias.copy_(self.u.bias)
            linears[m] = lin
        return Dense(d_in, d_out, linears)


class Layer(nn.Module):
    """A post-LN transformer layer for all three transformers; ``modality`` picks the weights."""

    def __init__(self, cfg: ModelConfig, factored: bool, rank: int | None) -> None:
        super().__init__()
        d, f = cfg.hidden, cfg.ffn
        self.heads = cfg.heads
        self.dropout = cfg.dropout

        def proj(d_in: int, d_out: int) -> nn.Module:
            if not factored:
                return Dense(d_in, d_out)
            return Factored(d_in, d_out, min(d_in, d_out) if rank is None else rank)

        self.q, self.k, self.v, self.o = proj(d, d), proj(d, d), proj(d, d), proj(d, d)
        self.fc1, self.fc2 = proj(d, f), proj(f, d)
        # LayerNorms: one per transformer, or one shared by the three when factored (AVBERT)
        names = ("shared",) if factored else MODALITIES
        self.ln1 = nn.ModuleDict({n: nn.LayerNorm(d) for n in names})
        self.ln2 = nn.ModuleDict({n: nn.LayerNorm(d) for n in names})
        self.drop = nn.Dropout(cfg.dropout)

    def _norm(self, lns: nn.ModuleDict, x: torch.Tensor, modality: str) -> torch.Tensor:
        return lns[modality if modality in lns else "shared"](x)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, modality: str) -> torch.Tensor:
        """x (B, N, D), valid (B, N) bool (True = a real token) -> (B, N, D)."""
        q = rearrange(self.q(x, modality), "b n (h e) -> b h n e", h=self.heads)
        k = rearrange(self.k(x, modality), "b n (h e) -> b h n e", h=self.heads)
        v = rearrange(self.v(x, modality), "b n (h e) -> b h n e", h=self.heads)
        attn_mask = rearrange(valid, "b n -> b 1 1 n")  # key padding, broadcast over heads/queries
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        y = rearrange(y, "b h n e -> b n (h e)")  # (B, N, D)
        x = self._norm(self.ln1, x + self.drop(self.o(y, modality)), modality)
        h = self.fc2(self.drop(F.gelu(self.fc1(x, modality))), modality)  # (B, N, D)
        return self._norm(self.ln2, x + self.drop(h), modality)


class Transformers(nn.Module):
    """The visual, audio and multimodal transformers with ``cfg.sharing`` between them."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        factored = cfg.sharing in ("layers+partial", "full")
        rank = cfg.rank if cfg.sharing == "full" else None  # None: full rank
        n = cfg.layers if cfg.sharing == "none" else 1  # 1: reused across depth (ALBERT)
        self.layers = nn.ModuleList(Layer(cfg, factored, rank) for _ in range(n))
        self.depth = cfg.layers

    def forward(self, x: torch.Tensor, valid: torch.Tensor, modality: str) -> torch.Tensor:
        """x (B, N, D), valid (B, N) bool -> (B, N, D), through transformer ``modality``."""
        for i in range(self.depth):
            x = self.layers[i % len(self.layers)](x, valid, modality)
        return x

    @torch.no_grad()
    def fold_(self) -> None:
        """In place: replace every ``Factored`` projection by its dense ``Dense`` equivalent."""
        for layer in self.layers:
            for name, child in list(layer.named_children()):
                if isinstance(child, Factored):
                    setattr(layer, name, child.fold())
