"""Training objectives as pure tensor functions (AVBERT, Lee et al. 2021, section 3.2).

- :func:`info_nce`: one positive against K negatives per query (cosine / temperature).
- :func:`clip_contrastive`: symmetric InfoNCE between clip-level audio and visual embeddings,
  the other clips of the batch are the negatives; shapes the retrieval embedding.
- :func:`masked_embedding_loss`: masked embedding prediction. A fraction of segment CNN features
  is masked (:func:`mask_segments`) before the transformers; the prediction at a masked position
  must pick its true CNN feature among K negatives drawn from the other segments of the batch.
- :func:`correct_pair_loss`: binary, audio and video of the same clip vs swapped
  (:func:`swap_pairs` builds the swapped batch).
- :func:`augmentation_consistency`: two differently edited views of the same window must embed
  close and other windows far (NT-Xent over both views of the batch); ``--recipe robust``.
- Negative sampling (:func:`negative_probabilities`, :func:`sample_negatives`): ``uniform``, or
  ``content``-aware: softmax(cosine(positive, candidate) / tau) in CNN space, so negatives more
  similar to the positive are drawn more often.

Nothing here owns parameters; heads and temperatures live in :mod:`pemt.train.trainer`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "NEGATIVE_MODES",
    "augmentation_consistency",
    "clip_contrastive",
    "correct_pair_loss",
    "info_nce",
    "mask_segments",
    "masked_embedding_loss",
    "negative_probabilities",
    "sample_negatives",
    "swap_pairs",
]

NEGATIVE_MODES = ("uniform", "content")


def info_nce(
    query: Tensor, positive: Tensor, negatives: Tensor, temperature: float | Tensor
) -> Tensor:
    """Mean of -log softmax of the positive among [positive, negatives], cosine / temperature.

    query, positive: (N, D); negatives: (N, K, D). With unit vectors where the positive equals
    the query and the K negatives are orthogonal to it, the loss is
    ``log(1 + K * exp(-1 / temperature))``.
    """
    q = F.normalize(query.float(), dim=-1)
    p = F.normalize(positive.float(), dim=-1)
    n = F.normalize(negatives.float(), dim=-1)
    pos = (q * p).sum(-1, keepdim=True)  # (N, 1)
    neg = torch.einsum("nd,nkd->nk", q, n)  # (N, K)
    logits = torch.cat([pos, neg], dim=1) / temperature  # (N, 1 + K)
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def clip_contrastive(
    audio: Tensor, visual: Tensor, temperature: float | Tensor, targets: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE between clip embeddings: audio (B, D) vs visual (B, D).

    Row i of ``visual`` matches row ``targets[i]`` of ``audio`` (default: row i). The other rows
    are the negatives. Returns the mean of the visual->audio and audio->visual cross-entropies.
    """
    a = F.normalize(audio.float(), dim=-1)
    v = F.normalize(visual.float(), dim=-1)
    if targets is None:
        targets = torch.arange(len(v), device=v.device)
    logits = v @ a.T / temperature  # (B, B): visual rows, audio columns
    inverse = torch.empty_like(targets)
    inverse[targets] = torch.arange(len(targets), device=targets.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, inverse))


def augmentation_consistency(view_a: Tensor, view_b: Tensor, temperature: float | Tensor) -> Tensor:
    """NT-Xent between two edited views of the same windows: view_a, view_b (B, D), row i of
    both from window i.

    Every one of the 2B vectors is a query; its positive is the other view of its window, its
    2B - 2 negatives are both views of the other windows (cosine / temperature). Returns the
    mean cross-entropy. With unit vectors, ``view_a == view_b`` and the B windows orthogonal,
    the loss is ``log(1 + (2B - 2) * exp(-1 / temperature))``; it needs B >= 2.
    """
    if view_a.shape != view_b.shape or view_a.ndim != 2 or len(view_a) < 2:
        raise ValueError(
            f"augmentation_consistency needs two (B, D) views with B >= 2, got "
            f"{tuple(view_a.shape)} and {tuple(view_b.shape)}"
        )
    z = F.normalize(torch.cat([view_a, view_b]).float(), dim=-1)  # (2B, D)
    b = len(view_a)
    logits = z @ z.T / temperature  # (2B, 2B)
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, -math.inf)  # a vector is not its own candidate
    target = torch.arange(2 * b, device=z.device).roll(b)  # i <-> i + B
    return F.cross_entropy(logits, target)


def correct_pair_loss(logits: Tensor, is_pair: Tensor) -> Tensor:
    """Binary cross-entropy: logits (B,), is_pair (B,) bool (True = audio and video match)."""
    return F.binary_cross_entropy_with_logits(
        logits.float().reshape(-1), is_pair.float().reshape(-1)
    )


def swap_pairs(
    batch_size: int, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """A permutation ``perm`` of range(B): row i takes the audio of clip ``perm[i]``.

    About ``fraction`` of the rows (at least two when fraction > 0 and B >= 2) are deranged
    (cyclically shifted among themselves), the rest keep their own audio. ``perm[i] != i``
    marks a swapped row.
    """
    perm = torch.arange(batch_size)
    n = min(batch_size, round(batch_size * fraction))
    if fraction > 0 and batch_size >= 2:
        n = max(n, 2)
    if n < 2:
        return perm
    rows = torch.randperm(batch_size, generator=generator)[:n]
    perm[rows] = rows.roll(1)
    return perm


def mask_segments(valid: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Choose segments to mask: valid (B, T) bool -> masked (B, T) bool, a subset of ``valid``.

    Each row masks round(ratio * its valid count) segments, at least one when it has two or more
    valid segments (so one unmasked segment always remains to predict from), none otherwise.
    """
    b, t = valid.shape
    scores = torch.rand(b, t, generator=generator).to(valid.device)
    scores = scores.masked_fill(~valid, 2.0)  # invalid segments sort last
    order = scores.argsort(dim=1)
    counts = valid.sum(1)
    k = (counts.float() * ratio).round().long()
    k = torch.where(counts >= 2, k.clamp(min=1), torch.zeros_like(k))
    k = torch.minimum(k, (counts - 1).clamp(min=0))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(t, device=valid.device).expand(b, t).contiguous())
    return (ranks < k[:, None]) & valid


def negative_probabilities(
    positives: Tensor, candidates: Tensor, exclude: Tensor, mode: str, temperature: float = 0.1
) -> Tensor:
    """Sampling probabilities of each candidate as a negative for each positive.

    positives (N, D) and candidates (M, D) are CNN features; exclude (N, M) bool marks candidates
    that must not be drawn for a positive (the positive itself). ``uniform``: equal over the
    allowed candidates. ``content``: softmax(cosine / temperature) over the allowed candidates, so a
    candidate more similar to the positive is drawn more often. Rows sum to 1 (all zero only
    when every candidate is excluded). Returns (N, M) float32; no gradient.
    """
    if mode not in NEGATIVE_MODES:
        raise ValueError(f"negatives={mode!r} is not one of {list(NEGATIVE_MODES)}")
    with torch.no_grad():
        if mode == "uniform":
            scores = torch.zeros(exclude.shape, device=positives.device)
        else:
            p = F.normalize(positives.detach().float(), dim=-1)
            c = F.normalize(candidates.detach().float(), dim=-1)
            scores = p @ c.T / temperature  # (N, M)
        scores = scores.masked_fill(exclude, -math.inf)
        probs = torch.softmax(scores, dim=1)
        return torch.nan_to_num(probs, nan=0.0)  # rows with every candidate excluded


def sample_negatives(
    probabilities: Tensor, k: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw k candidate indices per row from (N, M) probabilities, with replacement. (N, k) long."""
    if probabilities.shape[1] == 0 or not bool((probabilities.sum(1) > 0).all()):
        raise ValueError("no candidate negatives for some positive; use a batch with more segments")
    cpu = probabilities.float().cpu()
    idx = torch.multinomial(cpu, k, replacement=True, generator=generator)
    return idx.to(probabilities.device)


def masked_embedding_loss(
    predictions: Tensor,
    targets: Tensor,
    masked: Tensor,
    valid: Tensor,
    *,
    num_negatives: int,
    mode: str,
    temperature: float | Tensor,
    sampling_temperature: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Masked embedding prediction with InfoNCE.

    predictions (B, T, D): the head's output at every position (compared only where masked);
    targets (B, T, D): the unmasked CNN features (projected to D); masked, valid (B, T) bool.
    For every masked position the positive is its own target and the ``num_negatives`` negatives
    are targets of other valid segments anywhere in the batch, drawn ``uniform`` or
    ``content``-aware. Returns 0 when nothing is masked.
    """
    if not bool(masked.any()):
        return predictions.sum() * 0.0
    d = targets.shape[-1]
    flat_t = targets.reshape(-1, d)  # (B*T, D)
    pos_idx = masked.reshape(-1).nonzero().squeeze(1)  # (N,)
    cand_idx = valid.reshape(-1).nonzero().squeeze(1)  # (M,)
    exclude = pos_idx[:, None] == cand_idx[None, :]  # (N, M)
    probs = negative_probabilities(
        flat_t[pos_idx], flat_t[cand_idx], exclude, mode, sampling_temperature
    )
    neg = cand_idx[sample_negatives(probs, num_negatives, generator)]  # (N, K)
    query = predictions.reshape(-1, predictions.shape[-1])[pos_idx]
    return info_nce(query, flat_t[pos_idx], flat_t[neg], temperature)
