"""The visual, audio and multimodal transformers and the parameter sharing between them.

One ``Transformers`` module holds all three, because in the sharing modes ``layers+partial`` and
``full`` they share weights; the modality is an argument of ``forward``. Post-LN layers as in
AVBERT's ALBERT/BERT code: ``h = LN1(x + O(Attn(x))); y = LN2(h + FC2(GELU(FC1(h))))``, GELU
in its erf form, LayerNorm eps 1e-12, attention ``softmax(q k^T / sqrt(d_head))`` over the
valid keys (AVBERT adds -10000 to masked keys; it never masks, and neither do we for a full
window).

Sharing modes (``cfg.sharing``) and AVBERT's flags (``SHARING_ACROSS_LAYERS``, ``_MODELS``,
``USE_DECOMPOSITION``), transformer parameters at paper size (``pemt params``)::

    none             127.6M   three BERTs of cfg.layers layers, plain Linear    (no, no, no)
    layers            21.3M   three ALBERTs: one layer reused across depth      (yes, no, no)
    layers+partial    31.9M   one ALBERT for all three, factored projections,   (yes, yes, yes,
                              private rank = hidden                              ORTHOGONAL_SIZE = hidden)
    full               3.8M   the same with private rank cfg.rank (paper: 128)  (yes, yes, yes)

In the factored modes the LayerNorms are shared by the three transformers too; position and
token-type embeddings (``PEMT``) never are.

Factored projection for transformer m (AVBERT's ``FactorLinear``, ``Factored``)::

    y = U (B_m^T normalize(V_m x)) + b      V_m: d_in -> r, no bias, private
                                            normalize: L2 over the r values (eps 1e-12)
                                            B_m = base_m expm(triu(A_m, 1) - triu(A_m, 1)^T),
                                                  r x r orthogonal (expRNN), A_m and base_m private
                                            U: r -> d_out with bias b, shared by the three

The normalization sits between V_m and the rest, so export folds what folds:
``W_m = U B_m^T`` (d_out x r) per transformer (``Factored.fold`` -> ``FoldedFactored``): the graph
computes ``V_m x``, normalizes, multiplies by ``W_m`` and adds ``b``, with no matrix exponential.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pemt.config import ModelConfig

__all__ = [
    "LN_EPS",
    "MODALITIES",
    "Dense",
    "Factored",
    "FoldedFactored",
    "Layer",
    "Transformers",
    "rotation",
]

MODALITIES = ("visual", "audio", "multimodal")  # AVBERT's modality groups 0, 1, 2
LN_EPS = 1e-12  # AVBERT's transformer-side LayerNorm eps (AlbertConfig's default)
_INIT_STD = 0.02


def _linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(d_in, d_out, bias=bias)
    nn.init.normal_(lin.weight, std=_INIT_STD)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


def rotation(a: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """expRNN's orthogonal matrix: ``base @ matrix_exp(S)``, ``S = triu(a, 1) - triu(a, 1)^T``
    (only the strict upper triangle of ``a`` is read). AVBERT caches it as ``_B``."""
    s = torch.triu(a, diagonal=1)
    return base @ torch.matrix_exp(s - s.T)


class Dense(nn.Module):
    """One plain ``nn.Linear`` per transformer: y = W_m x + b_m."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear = nn.ModuleDict({m: _linear(d_in, d_out) for m in MODALITIES})

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.linear[modality](x)


class _Buffers(nn.Module):
    """Named buffers, one per transformer (``nn.ParameterDict`` for non-trainable tensors)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t)

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, name)


class Factored(nn.Module):
    """y = U (B_m^T normalize(V_m x)) + b with U, b shared and V_m, A_m, base_m private (see
    the module docstring)."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.u = _linear(rank, d_out)  # AVBERT s_linear: shared by the three transformers
        # normalize() makes V_m x a unit vector; scale U so that the output starts at the size a
        # dense layer of std 0.02 gives on a LayerNorm'd input (0.02 sqrt(d_in)), not 0.02
        nn.init.normal_(self.u.weight, std=_INIT_STD * d_in**0.5)
        self.v = nn.ParameterDict(  # AVBERT ms{g}_linear: V_m (r, d_in), private
            {m: nn.Parameter(torch.randn(rank, d_in) * _INIT_STD) for m in MODALITIES}
        )
        self.a = nn.ParameterDict(  # AVBERT orthogonal_ms{g}_linear.A; 0 -> B_m = base_m
            {m: nn.Parameter(torch.zeros(rank, rank)) for m in MODALITIES}
        )
        self.base = _Buffers({m: torch.eye(rank) for m in MODALITIES})  # expRNN's base

    def rotation(self, modality: str) -> torch.Tensor:
        return rotation(self.a[modality], self.base[modality])  # (r, r)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        h = F.normalize(F.linear(x, self.v[modality]), dim=-1)  # (..., r), unit rows
        return self.u(h @ self.rotation(modality))  # (..., d_out)

    @torch.no_grad()
    def fold(self) -> FoldedFactored:
        """The same map with ``W_m = U B_m^T`` precomputed (no matrix exponential)."""
        u = self.u.weight  # (d_out, r)
        ws = {m: u @ self.rotation(m).T for m in MODALITIES}  # (d_out, r) each
        return FoldedFactored({m: self.v[m].detach().clone() for m in MODALITIES}, ws, self.u.bias)


class FoldedFactored(nn.Module):
    """``Factored`` after folding: y = W_m normalize(V_m x) + b, two GEMMs and a norm."""

    def __init__(
        self, vs: dict[str, torch.Tensor], ws: dict[str, torch.Tensor], bias: torch.Tensor
    ) -> None:
        super().__init__()
        self.v = nn.ParameterDict({m: nn.Parameter(t) for m, t in vs.items()})  # (r, d_in)
        self.w = nn.ParameterDict({m: nn.Parameter(t.clone()) for m, t in ws.items()})  # (d_out, r)
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        h = F.normalize(F.linear(x, self.v[modality]), dim=-1)  # (..., r)
        return F.linear(h, self.w[modality], self.bias)  # (..., d_out)


class Layer(nn.Module):
    """A post-LN transformer layer for all three transformers; ``modality`` picks the weights."""

    def __init__(self, cfg: ModelConfig, factored: bool, rank: int) -> None:
        super().__init__()
        d, f = cfg.hidden, cfg.ffn
        self.heads = cfg.heads
        self.dropout = cfg.dropout

        def proj(d_in: int, d_out: int) -> nn.Module:
            return Factored(d_in, d_out, rank) if factored else Dense(d_in, d_out)

        self.q, self.k, self.v, self.o = proj(d, d), proj(d, d), proj(d, d), proj(d, d)
        self.fc1, self.fc2 = proj(d, f), proj(f, d)
        # LayerNorms: one per transformer, or one shared by the three when factored (AVBERT)
        names = ("shared",) if factored else MODALITIES
        self.ln1 = nn.ModuleDict({n: nn.LayerNorm(d, eps=LN_EPS) for n in names})
        self.ln2 = nn.ModuleDict({n: nn.LayerNorm(d, eps=LN_EPS) for n in names})
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
        h = self.fc2(F.gelu(self.fc1(x, modality)), modality)  # (B, N, D)
        return self._norm(self.ln2, x + self.drop(h), modality)


class Transformers(nn.Module):
    """The visual, audio and multimodal transformers with ``cfg.sharing`` between them."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        factored = cfg.sharing in ("layers+partial", "full")
        rank = cfg.rank if cfg.sharing == "full" else cfg.hidden  # hidden: AVBERT at full rank
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
        """In place: replace every ``Factored`` projection by its ``FoldedFactored`` form."""
        for layer in self.layers:
            for name, child in list(layer.named_children()):
                if isinstance(child, Factored):
                    setattr(layer, name, child.fold())
