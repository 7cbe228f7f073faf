"""The k-NN vote behind ``classify``, the same for every backend.

Each of the k nearest labeled neighbours votes for its label with weight max(score, 0)
(cosine); ``scores`` are each label's share of the total weight (plain counts when every
weight is 0); ``label`` is the top one, ties going to the label of the better neighbour.
"""

from __future__ import annotations

from .types import Classification, Hit

__all__ = ["vote"]


def vote(neighbors: list[Hit], label_key: str = "label") -> Classification:
    """Classify by the labels of ``neighbors`` (best first; each has ``label_key``)."""
    if not neighbors:
        return Classification(label=None)
    weights: dict[str, float] = {}
    for h in neighbors:
        label = str(h.metadata[label_key])
        weights[label] = weights.get(label, 0.0) + max(h.score, 0.0)
    total = sum(weights.values())
    if total <= 0:
        weights = {}
        for h in neighbors:
            label = str(h.metadata[label_key])
            weights[label] = weights.get(label, 0.0) + 1.0
        total = float(len(neighbors))
    scores = {lab: w / total for lab, w in sorted(weights.items(), key=lambda kv: -kv[1])}
    first = {str(h.metadata[label_key]): i for i, h in reversed(list(enumerate(neighbors)))}
    best = max(scores, key=lambda lab: (scores[lab], -first[lab]))
    return Classification(label=best, scores=scores, neighbors=neighbors)
