"""Objectives on cases computable by hand (pemt.train.losses)."""

from __future__ import annotations

import math

import pytest
import torch

from pemt.train.losses import (
    augmentation_consistency,
    clip_contrastive,
    correct_pair_loss,
    info_nce,
    mask_segments,
    masked_embedding_loss,
    negative_probabilities,
    sample_negatives,
    swap_pairs,
)


def test_info_nce_orthogonal_negatives() -> None:
    q = torch.eye(5)[:1]  # (1, 5)
    negs = torch.eye(5)[1:][None]  # (1, 4, 5), orthogonal to q
    for t in (1.0, 0.5, 0.07):
        got = info_nce(q, q, negs, t).item()
        assert got == pytest.approx(math.log(1 + 4 * math.exp(-1 / t)), rel=1e-4, abs=1e-6)


def test_info_nce_identical_negatives_is_log_k_plus_1() -> None:
    q = torch.randn(3, 8)
    negs = q[:, None].expand(3, 6, 8)  # every negative equals the positive
    assert info_nce(q, q, negs, 0.1).item() == pytest.approx(math.log(7), rel=1e-5)


def test_info_nce_scale_invariant() -> None:
    q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 3, 8)
    assert info_nce(q, p, n, 0.2).item() == pytest.approx(
        info_nce(3 * q, 0.5 * p, 2 * n, 0.2).item(), rel=1e-5
    )


def test_clip_contrastive_orthonormal() -> None:
    e = torch.eye(4)
    # matched rows: cosine 1, others 0 -> log(1 + 3 exp(-1/t)) both ways
    for t in (1.0, 0.1):
        assert clip_contrastive(e, e, t).item() == pytest.approx(
            math.log(1 + 3 * math.exp(-1 / t)), rel=1e-4, abs=1e-6
        )
    # identical embeddings everywhere: chance level log(B)
    same = torch.ones(4, 8)
    assert clip_contrastive(same, same, 0.07).item() == pytest.approx(math.log(4), rel=1e-5)


def test_clip_contrastive_targets_follow_permutation() -> None:
    a, v = torch.randn(5, 16), torch.randn(5, 16)
    perm = torch.tensor([2, 0, 1, 4, 3])
    # visual row i matches audio row targets[i]; shuffling audio rows with the inverse is equal
    got = clip_contrastive(a[perm], v, 0.1, targets=torch.argsort(perm))
    assert got.item() == pytest.approx(clip_contrastive(a, v, 0.1).item(), rel=1e-5)


def test_correct_pair_loss_values() -> None:
    logits = torch.tensor([0.0, 0.0])
    assert correct_pair_loss(logits, torch.tensor([True, False])).item() == pytest.approx(
        math.log(2)
    )
    big = torch.tensor([20.0, -20.0])
    assert correct_pair_loss(big, torch.tensor([True, False])).item() < 1e-6
    assert correct_pair_loss(big, torch.tensor([False, True])).item() == pytest.approx(
        20.0, rel=1e-4
    )


def test_swap_pairs_is_permutation_with_derangement() -> None:
    g = torch.Generator().manual_seed(0)
    for b in (2, 3, 8, 9):
        perm = swap_pairs(b, 0.5, g)
        assert sorted(perm.tolist()) == list(range(b))
        swapped = (perm != torch.arange(b)).sum().item()
        assert swapped >= 2
    assert swap_pairs(6, 0.0, g).tolist() == list(range(6))


def test_mask_segments_subset_and_count() -> None:
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[1, 4:] = False
    valid[2, 1:] = False  # one valid segment: never masked (nothing left to predict from)
    m = mask_segments(valid, 0.3, torch.Generator().manual_seed(1))
    assert not (m & ~valid).any()
    assert m.sum(1).tolist() == [3, 1, 0]


def test_content_probabilities_rank_similar_negatives_higher() -> None:
    pos = torch.tensor([[1.0, 0.0]])
    cands = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0], [-1.0, 0.0]])
    exclude = torch.tensor([[True, False, False, False, False]])  # candidate 0 is the positive
    p = negative_probabilities(pos, cands, exclude, "content", temperature=0.1)[0]
    assert p[0] == 0
    assert p.sum().item() == pytest.approx(1.0)
    assert p[1] > p[2] > p[3] > p[4]
    # the softmax by hand
    cos = torch.nn.functional.normalize(cands, dim=1) @ pos[0]
    want = torch.softmax(cos[1:] / 0.1, 0)
    torch.testing.assert_close(p[1:], want)
    u = negative_probabilities(pos, cands, exclude, "uniform")[0]
    torch.testing.assert_close(u, torch.tensor([0.0, 0.25, 0.25, 0.25, 0.25]))
    with pytest.raises(ValueError, match="uniform"):
        negative_probabilities(pos, cands, exclude, "hard")


def test_sampling_follows_probabilities() -> None:
    probs = torch.tensor([[0.0, 0.7, 0.2, 0.1]])
    idx = sample_negatives(probs, 20000, torch.Generator().manual_seed(0))
    freq = torch.bincount(idx[0], minlength=4).float() / 20000
    assert freq[0] == 0
    torch.testing.assert_close(freq, probs[0], atol=0.02, rtol=0)


def test_masked_embedding_loss_perfect_prediction_beats_random() -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.nn.functional.normalize(torch.randn(4, 6, 32, generator=g), dim=-1)
    valid = torch.ones(4, 6, dtype=torch.bool)
    masked = mask_segments(valid, 0.5, g)
    kw = dict(num_negatives=8, temperature=0.1, generator=torch.Generator().manual_seed(1))
    perfect = masked_embedding_loss(targets, targets, masked, valid, mode="uniform", **kw)
    noise = masked_embedding_loss(
        torch.randn(4, 6, 32, generator=g), targets, masked, valid, mode="uniform", **kw
    )
    assert perfect.item() < 0.5 < noise.item()
    # nothing masked: zero, and still differentiable
    pred = torch.randn(4, 6, 32, requires_grad=True)
    z = masked_embedding_loss(pred, targets, torch.zeros_like(valid), valid, mode="content", **kw)
    z.backward()
    assert z.item() == 0.0


def test_content_negatives_are_harder_than_uniform() -> None:
    # targets in two tight clusters: content-aware negatives come from the positive's cluster
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 16, generator=g) * 3
    labels = torch.arange(40) % 2
    targets = (centres[labels] + 0.3 * torch.randn(40, 16, generator=g)).reshape(4, 10, 16)
    valid = torch.ones(4, 10, dtype=torch.bool)
    masked = torch.zeros_like(valid)
    masked[:, :3] = True
    kw = dict(num_negatives=16, temperature=0.5)
    hard = masked_embedding_loss(targets, targets, masked, valid, mode="content",
                                 sampling_temperature=0.05, generator=torch.Generator().manual_seed(2), **kw)  # fmt: skip
    easy = masked_embedding_loss(targets, targets, masked, valid, mode="uniform",
                                 generator=torch.Generator().manual_seed(2), **kw)  # fmt: skip
    assert hard.item() > easy.item()


def test_augmentation_consistency_closed_form() -> None:
    b = 4
    z = torch.eye(8)[:b]  # B orthogonal unit windows, both views identical
    for t in (1.0, 0.1):
        got = augmentation_consistency(z, z.clone(), t).item()
        assert got == pytest.approx(
            math.log(1 + (2 * b - 2) * math.exp(-1 / t)), rel=1e-5, abs=1e-6
        )
    # views scaled differently: cosine, so the same value
    assert augmentation_consistency(3 * z, 0.5 * z, 0.1).item() == pytest.approx(
        augmentation_consistency(z, z, 0.1).item(), rel=1e-5
    )


def test_augmentation_consistency_prefers_matching_views() -> None:
    a = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    near = a + 0.05 * torch.randn(6, 16)
    matched = augmentation_consistency(a, near, 0.1).item()
    shuffled = augmentation_consistency(a, near.roll(1, 0), 0.1).item()
    assert matched < 0.1 < shuffled
    # all 2B vectors equal: each query sees 1 positive and 2B - 2 equal negatives
    same = torch.ones(3, 4)
    assert augmentation_consistency(same, same, 0.5).item() == pytest.approx(math.log(5), rel=1e-5)
    with pytest.raises(ValueError, match="B >= 2"):
        augmentation_consistency(a[:1], a[:1], 0.1)
