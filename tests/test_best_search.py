"""``modality="best"`` (server.core.best): the merge on hand-made hit lists, and exactness
against a brute-force maximum over all three similarity matrices on a real FAISS + SQLite
``VectorIndex`` where some items lack audio or picture. The API is tested in test_server.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.core.best import merge_best, search_best
from server.index import VectorIndex
from server.index.types import Hit, Record


def _hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(id=i, score=s, start=None, end=None, metadata={}) for i, s in pairs]


def test_merge_keeps_each_items_best_score_and_cuts_to_k() -> None:
    per = {
        "fused": _hits(("a", 0.5), ("b", 0.4), ("c", 0.1)),
        "audio": _hits(("b", 0.9), ("a", 0.2)),
        "visual": _hits(("d", 0.6), ("a", 0.5)),  # a ties its fused score: fused comes first
    }
    got = merge_best(per, k=3)
    assert [(b.hit.id, b.hit.score, b.modality) for b in got] == [
        ("b", 0.9, "audio"),
        ("d", 0.6, "visual"),  # only in one list
        ("a", 0.5, "fused"),
    ]
    assert [b.hit.id for b in merge_best(per, k=10)] == ["b", "d", "a", "c"]
    # equal scores of different items: by id, whatever the lists' order
    tied = merge_best({"fused": _hits(("y", 0.3), ("x", 0.3)), "audio": _hits(("z", 0.3))}, 2)
    assert [b.hit.id for b in tied] == ["x", "y"]
    assert merge_best({"fused": [], "audio": []}, 5) == []
    with pytest.raises(ValueError, match="k must be"):
        merge_best(per, 0)


def test_best_equals_brute_force_max_over_shared_modalities(tmp_path: Path) -> None:
    """Random unit vectors; a third of the items lack audio, a fifth lack picture; the query
    has all three, then only fused + visual (a file without sound)."""
    rng = np.random.default_rng(7)
    n, d, k = 300, 16, 10

    def unit(*shape: int) -> np.ndarray:
        v = rng.standard_normal((*shape, d)).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    stored = {m: unit(n) for m in ("fused", "audio", "visual")}
    has = {
        "fused": np.ones(n, bool),
        "audio": rng.random(n) > 1 / 3,
        "visual": rng.random(n) > 1 / 5,
    }
    ids = [f"it{i:03d}" for i in range(n)]
    with VectorIndex(tmp_path / "ix", dim=d) as ix:
        ix.upsert_many(
            Record(id=ids[i], vectors={m: stored[m][i] for m in stored if has[m][i]})
            for i in range(n)
        )
        for trial in range(6):
            query = {m: unit(1)[0] for m in stored}
            if trial % 2:
                del query["audio"]
            exclude = {ids[j] for j in rng.choice(n, 5, replace=False)}
            got = search_best(ix, query, k, exclude=exclude)

            sims = np.full((len(query), n), -np.inf)  # (modalities, items)
            for r, (m, q) in enumerate(query.items()):
                sims[r, has[m]] = stored[m][has[m]] @ q
            for j in exclude:
                sims[:, ids.index(j)] = -np.inf
            best = sims.max(axis=0)
            want = np.argsort(-best)[:k]
            assert [b.hit.id for b in got] == [ids[i] for i in want], trial
            np.testing.assert_allclose([b.hit.score for b in got], best[want], atol=1e-5)
            modality_names = list(query)
            assert [b.modality for b in got] == [
                modality_names[int(sims[:, i].argmax())] for i in want
            ]


def test_an_upload_queries_with_the_streams_it_has() -> None:
    """A file without sound queries with fused + visual only (the model still outputs an audio
    vector for it, which no stored item of such a file would have); one with both, all three."""
    from server.core.decode import WindowInfo
    from server.core.pipeline import Embedded, query_vectors

    rng = np.random.default_rng(1)
    vectors = {
        m: rng.standard_normal((2, 8)).astype(np.float32) for m in ("fused", "audio", "visual")
    }

    def windows(audio: bool) -> list[WindowInfo]:
        return [WindowInfo(i, 2.0 * i, 2.0 * i + 4, audio, True) for i in range(2)]

    silent = query_vectors(Embedded(windows(False), vectors, [None, None]))
    assert list(silent) == ["fused", "visual"]
    both = query_vectors(Embedded(windows(True), vectors, [None, None]))
    assert list(both) == ["fused", "audio", "visual"]
    want = vectors["audio"].mean(axis=0)
    np.testing.assert_allclose(both["audio"], want / np.linalg.norm(want), rtol=1e-6)
