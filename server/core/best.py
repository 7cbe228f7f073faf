"""``modality="best"``: score each stored item by its best stream.

A copy edited in one stream only (greyed, cropped or shown picture-in-picture with its sound
intact; or re-encoded, noisy sound under an intact picture) is found by the untouched stream's
vector far better than by the fused one. ``best`` scores an item by the maximum of its cosine
similarities to the query over the modalities (fused, visual, audio) that both have, and needs
nothing from the index but its ordinary one-modality ``search``: it works on every backend.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.index.types import Hit

__all__ = ["BestHit", "merge_best", "search_best"]


@dataclass(frozen=True)
class BestHit:
    """A hit scored by its best modality: ``hit.score`` is that modality's similarity."""

    hit: Hit
    modality: str


def merge_best(per_modality: Mapping[str, Sequence[Hit]], k: int) -> list[BestHit]:
    """Merge one top-k hit list per modality into the top ``k`` items by their best score.

    Each item keeps the highest score any list gives it (and that list's modality; on equal
    scores the modality that comes first in ``per_modality``); the result is sorted by score,
    best first (equal scores by id, so the order is deterministic), and cut to ``k``.

    Exact when every list is its modality's exact top-k (same ``k``, filter and exclusions):
    let S(i) = max over shared modalities m of s_m(i), and let item i be in the true top-k by S,
    with its maximum reached in modality m. Were i missing from m's list, that list would hold k
    items j with s_m(j) > s_m(i) = S(i), hence S(j) > S(i): k items beat i, a contradiction.
    So every true top-k item is here with its exact S(i). Any other item's merged score is at
    most its S, which is at most the k-th best, so it cannot push a true top-k item out (ties
    aside, where either order is right). An item without a modality's vector is never in that
    modality's list, so it is scored only on the modalities it shares with the query. With an
    approximate index (IVF, HNSW) the result is exactly as approximate as the lists.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    best: dict[str, BestHit] = {}
    for modality, hits in per_modality.items():
        for h in hits:
            have = best.get(h.id)
            if have is None or h.score > have.hit.score:
                best[h.id] = BestHit(h, modality)
    ranked = sorted(best.values(), key=lambda b: (-b.hit.score, b.hit.id))
    return ranked[:k]


def search_best(
    index: Any,
    vectors: Mapping[str, np.ndarray],
    k: int,
    filter: Mapping[str, Any] | None = None,
    *,
    exclude: Collection[str] = (),
) -> list[BestHit]:
    """The top ``k`` items by best score for a query with one vector per modality it has
    (``vectors``: modality -> (D,) vector): the index's own ``search`` in each modality, with
    the same ``k``, ``filter`` and ``exclude``, then :func:`merge_best`. Blocking (run it in
    the index pool); works with any ``server.index.Index``."""
    if not vectors:
        raise ValueError("search_best needs at least one query vector")
    per_modality = {
        m: index.search(v, k=k, modality=m, filter=filter, exclude=exclude)
        for m, v in vectors.items()
    }
    return merge_best(per_modality, k)
