"""The index against numpy brute force: the FAISS store (real FAISS, real SQLite) and, for the
tests that take ``open_index``, the Milvus backend too (a real ``milvus-lite server``), with the
same assertions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from server.index import Classification, Hit, Record, VectorIndex

ROOT = Path(__file__).resolve().parents[1]
D = 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16 + b"\xff\xd9"


@pytest.fixture(params=["faiss", "milvus"])
def open_index(request, tmp_path):
    """``open_index(dim=D, **options)``: a new, empty index of the test's backend. Milvus: a
    fresh collection on the session's milvus-lite server, exact (FLAT) search; the options
    (compaction, pre-filtering) are the FAISS store's and do not apply."""
    opened = []

    def make(dim: int = D, **kw):
        if request.param == "faiss":
            ix = VectorIndex(tmp_path / f"ix{len(opened)}", dim=dim, **kw)
        else:
            from server.index.milvus import MilvusIndex

            server = request.getfixturevalue("milvus_server")
            name = f"t{uuid.uuid4().hex[:16]}"
            ix = MilvusIndex(
                server.uri, name, dim, thumbnails=tmp_path / "thumbs", index_type="FLAT"
            )
        opened.append(ix)
        return ix

    yield make
    for ix in opened:
        if request.param == "milvus" and ix._client is not None:
            ix._c().drop_collection(ix.collection)
        ix.close()


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_vectors(n: int, dim: int = D, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def clustered(n: int, dim: int, n_clusters: int, seed: int = 0, spread: float = 0.35):
    """(vectors, cluster of each, centers): unit vectors scattered around unit centers."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((n_clusters, dim)))
    labels = rng.integers(0, n_clusters, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * spread / np.sqrt(dim)
    return unit(centers[labels] + noise), labels, centers


def brute_force(x: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> list[str]:
    scores = x @ unit(q)
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def fill(ix: VectorIndex, x: np.ndarray, prefix: str = "v", **meta_fns) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(len(x))]
    ix.upsert_many(
        Record(
            ids[i], {"fused": x[i]}, {k: fn(i) for k, fn in meta_fns.items()}, start=0.0, end=30.0
        )
        for i in range(len(x))
    )
    return ids


def recall_at_k(
    ix: VectorIndex, x: np.ndarray, ids: list[str], queries: np.ndarray, k: int = 10
) -> float:
    found = 0
    for q in queries:
        want = set(brute_force(x, ids, q, k))
        found += len(want & {h.id for h in ix.search(q, k)})
    return found / (k * len(queries))


# ---------------------------------------------------------------------------- CRUD


def test_upsert_get_list_delete(open_index):
    x = random_vectors(3, seed=1)
    with open_index() as ix:
        assert ix.count() == 0 and ix.search(x[0], 5) == []
        ix.upsert(
            "clip1#w0",
            {"fused": x[0], "audio": x[1], "visual": x[2]},
            metadata={"clip_id": "clip1", "title": "a dog", "tags": ["x", "y"]},
            start=0.0,
            end=30.0,
            thumbnail=JPEG,
        )
        ix.upsert("clip1#w1", {"fused": 3 * x[1]}, metadata={"clip_id": "clip1"}, start=15, end=45)
        ix.upsert("other", {"visual": x[2]})
        assert ix.count() == len(ix) == 3 and "other" in ix and "nope" not in ix

        item = ix.get("clip1#w0", with_vectors=True)
        assert (
            item is not None and item.clip_id == "clip1" and (item.start, item.end) == (0.0, 30.0)
        )
        assert item.metadata["tags"] == ["x", "y"] and item.has_thumbnail
        assert set(item.modalities) == {"fused", "audio", "visual"}
        assert item.vectors is not None
        np.testing.assert_allclose(item.vectors["audio"], x[1], atol=1e-6)
        assert ix.thumbnail("clip1#w0") == JPEG and ix.thumbnail("other") is None
        # stored normalized: 3 * x[1] comes back as x[1]
        np.testing.assert_allclose(ix.get_vector("clip1#w1"), x[1], atol=1e-6)
        assert ix.get_vector("other", "fused") is None

        assert [i.id for i in ix.list()] == ["clip1#w0", "clip1#w1", "other"]
        assert [i.id for i in ix.list(offset=1, limit=1)] == ["clip1#w1"]
        assert [i.id for i in ix.list(clip_id="clip1")] == ["clip1#w0", "clip1#w1"]
        assert ix.list()[0].to_dict()["metadata"]["title"] == "a dog"

        # upsert replaces: new vector, new metadata, created_at kept
        created = ix.get("clip1#w1").created_at
        ix.upsert("clip1#w1", {"fused": x[2]}, metadata={"v": 2})
        again = ix.get("clip1#w1")
        assert again.metadata == {"v": 2} and again.created_at == created and ix.count() == 3
        assert ix.search(x[2], 1, "fused")[0].id == "clip1#w1"
        assert {h.id for h in ix.search(x[2], 5, "visual")} == {"clip1#w0", "other"}  # a tie

        assert ix.delete("other") and not ix.delete("other") and ix.get("other") is None
        assert ix.search(x[2], 5, "visual")[0].id == "clip1#w0"
        assert ix.delete_clip("clip1") == 1  # clip1#w1 was replaced without a clip id
        assert ix.count() == 1 and [h.id for h in ix.search(x[0], 5)] == ["clip1#w1"]


@pytest.mark.parametrize(
    "bad_id", ["", "-x", "a b", "a/b", "x" * 129, "ü", None, 5, "../etc", "a\nb"]
)
def test_invalid_ids_rejected(tmp_path, bad_id):
    with VectorIndex(tmp_path, dim=D) as ix:
        with pytest.raises(ValueError, match="invalid id"):
            ix.upsert(bad_id, {"fused": random_vectors(1)[0]})
        assert ix.count() == 0


def test_bad_input_rejected_with_reason(open_index):
    v = random_vectors(1)[0]
    with open_index() as ix:
        cases = [
            ({"fused": v[:5]}, {}, "shape"),
            ({"fused": np.zeros(D)}, {}, "all zeros"),
            ({"fused": np.full(D, np.nan)}, {}, "NaN"),
            ({"speech": v}, {}, "unknown modality"),
            ({}, {}, "non-empty"),
            ({"fused": v}, {"metadata": {"x": object()}}, "JSON"),
            ({"fused": v}, {"start": 5.0, "end": 1.0}, "before start"),
            ({"fused": v}, {"thumbnail": b"PNG..."}, "JPEG"),
            ({"fused": v}, {"clip_id": "bad id"}, "clip_id"),
        ]
        for vectors, kwargs, msg in cases:
            with pytest.raises(ValueError, match=msg):
                ix.upsert("ok", vectors, **kwargs)
        with pytest.raises(ValueError, match="duplicate"):
            ix.upsert_many([Record("a", {"fused": v}), Record("a", {"fused": v})])
        # all or nothing: one bad record, nothing written
        with pytest.raises(ValueError):
            ix.upsert_many([Record("a", {"fused": v}), Record("b", {"fused": v[:3]})])
        assert ix.count() == 0
        with pytest.raises(ValueError, match="k must be"):
            ix.search(v, 0)
        with pytest.raises(ValueError, match="filter value"):
            ix.search(v, 3, filter={"x": [1]})
        with pytest.raises(ValueError, match="unknown modality"):
            ix.search(v, 3, modality="speech")


def test_bad_options_rejected(tmp_path):
    with VectorIndex(tmp_path, dim=D):
        pass
    with pytest.raises(ValueError, match="not dim=8"):
        VectorIndex(tmp_path, dim=8)
    with pytest.raises(ValueError, match="pass dim"):
        VectorIndex(tmp_path / "new")
    with pytest.raises(ValueError, match="index_type"):
        VectorIndex(tmp_path, index_type="lsh")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- listing

# ids that differ only in case and punctuation: byte order puts '-' < '.' < '0-9' < ':' < 'A-Z'
# < '_' < 'a-z' (and '#' first); both backends must agree with Python's sorted() on them
ODD_IDS = ["A-1", "a.1", "a:1", "a_1", "Z", "a", "a#w1", "0", "a-1", "A_1", "b.9.z", "a1"]


def walk(ix, page: int, clip_id: str | None = None) -> list[str]:
    """Every id by cursor, ``page`` at a time; checks each page is ascending and full but the
    last."""
    ids: list[str] = []
    while True:
        got = [i.id for i in ix.list(limit=page, clip_id=clip_id, after=ids[-1] if ids else None)]
        assert got == sorted(got) and len(got) <= page
        ids += got
        if len(got) < page:
            return ids


def test_list_by_cursor_every_id_once_in_byte_order(open_index):
    x = random_vectors(8, dim=8, seed=3)
    rng = np.random.default_rng(0)
    clip = [f"c1#w{i}" for i in range(11)]
    ids = ODD_IDS + clip + [f"v{i:02d}" for i in range(20)]
    with open_index(dim=8) as ix:
        order = rng.permutation(len(ids))  # stored out of order, in three writes
        for part in np.array_split(order, 3):
            ix.upsert_many(
                Record(ids[i], {"fused": x[i % 8]}, clip_id="c1" if ids[i] in clip else None)
                for i in part
            )
        want = sorted(ids)
        assert want[:4] == ["0", "A-1", "A_1", "Z"] and ix.count() == len(ids)
        for page in (1, 4, 7, len(ids), 1000):
            assert walk(ix, page) == want, page
        for page in (1, 3, 11, 12):
            assert walk(ix, page, clip_id="c1") == sorted(clip), page
        assert ix.count(clip_id="c1") == len(clip) and ix.count(clip_id="nope") == 0
        # offset pages give the same order; a cursor needs not be a stored id
        by_offset = [i.id for o in range(0, len(ids), 5) for i in ix.list(o, 5)]
        assert by_offset == want
        assert [i.id for i in ix.list(limit=3, after="a.0")] == ["a.1", "a1", "a:1"]
        assert [i.id for i in ix.list(2, 2, clip_id="c1")] == sorted(clip)[2:4]
        assert ix.list(after=want[-1]) == [] and ix.list(offset=len(ids)) == []
        with pytest.raises(ValueError, match="not both"):
            ix.list(offset=1, after="a")
        with pytest.raises(ValueError, match="invalid after"):
            ix.list(after='a" or id != "')


def test_list_by_cursor_sees_writes_after_the_cursor_only(open_index):
    x = random_vectors(1, dim=8, seed=4)
    with open_index(dim=8) as ix:
        ix.upsert_many(Record(f"m{i}", {"fused": x[0]}) for i in range(10))
        first = [i.id for i in ix.list(limit=4)]
        assert first == ["m0", "m1", "m2", "m3"]
        ix.upsert_many(Record(i, {"fused": x[0]}) for i in ("a", "m35", "z"))  # before, after
        assert ix.delete("m7") and ix.delete("m1")
        rest: list[str] = []
        while page := [i.id for i in ix.list(limit=4, after=(rest or first)[-1])]:
            rest += page
        assert first + rest == ["m0", "m1", "m2", "m3", "m35", "m4", "m5", "m6", "m8", "m9", "z"]


def test_list_by_cursor_is_an_index_search_in_sqlite(tmp_path):
    """The keyset query reads from the cursor on (SEARCH on the id index), not from the start
    of the table (SCAN) as OFFSET does."""
    with VectorIndex(tmp_path / "ix", dim=4) as ix:
        sql, args = ix._list_sql(None, "m5")
        plan = [r[3] for r in ix._rcon().execute(f"EXPLAIN QUERY PLAN {sql}", (*args, 10, 0))]
        assert plan == ["SEARCH items USING INDEX sqlite_autoindex_items_1 (id>?)"], plan
        sql, args = ix._list_sql(None, None)
        plan = [r[3] for r in ix._rcon().execute(f"EXPLAIN QUERY PLAN {sql}", (*args, 10, 0))]
        assert plan == ["SCAN items USING INDEX sqlite_autoindex_items_1"], plan


# ---------------------------------------------------------------------------- search


def test_flat_search_equals_brute_force(open_index):
    x = random_vectors(3000, seed=2)
    queries = np.random.default_rng(3).standard_normal((10, D)).astype(np.float32)
    with open_index() as ix:
        ids = fill(ix, x)
        for q in queries:
            hits = ix.search(q, 10)
            assert [h.id for h in hits] == brute_force(x, ids, q, 10)
            want = np.sort(x @ unit(q))[::-1][:10]
            np.testing.assert_allclose([h.score for h in hits], want, atol=1e-5)
            assert all(isinstance(h, Hit) and h.start == 0.0 and h.end == 30.0 for h in hits)
        batch = ix.search_batch(queries, 10)
        assert [[h.id for h in hs] for hs in batch] == [brute_force(x, ids, q, 10) for q in queries]
        # exclude and search_by_id leave the query item out
        assert ix.search(x[7], 1)[0].id == "v7"
        assert ix.search(x[7], 1, exclude={"v7"})[0].id == brute_force(x, ids, x[7], 2)[1]
        assert [h.id for h in ix.search_by_id("v7", 3)] == brute_force(x, ids, x[7], 4)[1:]


def test_search_after_replace_and_delete(open_index):
    """Dead keys never come back, before and after compaction (compact_at=50)."""
    rng = np.random.default_rng(40)  # not 4: that stream would repeat x's vectors
    x = random_vectors(1000, seed=4)
    with open_index(compact_at=50) as ix:
        ids = fill(ix, x)
        live = dict(zip(ids, x, strict=True))
        for step in range(120):
            i = int(rng.integers(0, 1000))
            if step % 2:
                ix.delete(ids[i])
                live.pop(ids[i], None)
            else:
                v = unit(rng.standard_normal(D))
                ix.upsert(ids[i], {"fused": v})
                live[ids[i]] = v
            if step in (10, 119):
                lids, lx = list(live), np.stack(list(live.values()))
                for q in rng.standard_normal((10, D)):
                    assert [h.id for h in ix.search(q, 10)] == brute_force(lx, lids, q, 10)
        assert ix.count() == len(live)
        if isinstance(ix, VectorIndex):
            assert ix.stats()["modalities"]["fused"]["dead"] < 50


def test_ivf_trains_when_big_enough_and_recall(tmp_path):
    x, _, _ = clustered(12_000, 64, 100, seed=5, spread=1.5)
    rng = np.random.default_rng(6)
    queries = unit(x[rng.choice(12_000, 50)] + rng.standard_normal((50, 64)) * 0.05)
    with VectorIndex(tmp_path, dim=64, index_type="ivf", ivf_min_train=5000) as ix:
        ids = fill(ix, x[:3000])
        st = ix.stats()["modalities"]["fused"]
        assert st["ivf"] is False  # exact flat until enough vectors exist
        assert recall_at_k(ix, x[:3000], ids, queries) == 1.0
        ids += fill(ix, x[3000:], prefix="w")
        st = ix.stats()["modalities"]["fused"]
        assert st["ivf"] is True and st["nlist"] == 128
        ids = [f"v{i}" for i in range(3000)] + [f"w{i}" for i in range(9000)]
        recall = recall_at_k(ix, x, ids, queries)
        assert recall >= 0.85, recall  # measured 0.926 with the default nprobe 8 of 128
        assert recall_at_k_probe(ix, x, ids, queries, nprobe=1) < recall  # 0.78
        assert recall_at_k_probe(ix, x, ids, queries, nprobe=128) == 1.0


def recall_at_k_probe(ix, x, ids, queries, nprobe, k=10):
    found = 0
    for q in queries:
        found += len(
            set(brute_force(x, ids, q, k)) & {h.id for h in ix.search(q, k, nprobe=nprobe)}
        )
    return found / (k * len(queries))


def test_hnsw_recall_and_deletes(tmp_path):
    x, _, _ = clustered(8000, 64, 50, seed=7, spread=0.6)
    rng = np.random.default_rng(8)
    queries = unit(x[rng.choice(8000, 50)] + rng.standard_normal((50, 64)) * 0.05)
    with VectorIndex(tmp_path, dim=64, index_type="hnsw", hnsw_m=16, ef_search=64) as ix:
        ids = fill(ix, x)
        recall = recall_at_k(ix, x, ids, queries)
        assert recall >= 0.95, recall  # measured 0.998
        # HNSW cannot remove: dead keys are skipped by a selector until a rebuild
        assert ix.delete_many(ids[i] for i in range(0, 8000, 8)) == 1000
        assert ix.stats()["modalities"]["fused"]["dead"] == 1000
        keep = [i for i in range(8000) if i % 8]
        kx, kids = x[keep], [ids[i] for i in keep]
        hits = ix.search(queries[0], 10)
        assert {h.id for h in hits} <= set(kids)
        assert recall_at_k(ix, kx, kids, queries) >= 0.90
        # a quarter of the graph dead: rebuilt from SQLite without them
        assert ix.delete_many(ids[i] for i in range(1, 8000, 8)) == 1000
        assert ix.stats()["modalities"]["fused"] == {"vectors": 6000, "dead": 0}
        keep = [i for i in range(8000) if i % 8 > 1]
        assert recall_at_k(ix, x[keep], [ids[i] for i in keep], queries) >= 0.95


def test_ivf_retrains_as_it_grows_and_skips_deleted(tmp_path):
    x = random_vectors(1700, seed=21)
    with VectorIndex(
        tmp_path, dim=D, index_type="ivf", ivf_min_train=700, ivf_retrain_growth=2
    ) as ix:
        ids = fill(ix, x[:800])
        assert ix.stats()["modalities"]["fused"]["nlist"] == 20  # 800 // 39
        ids += fill(ix, x[800:], prefix="w")
        assert ix.stats()["modalities"]["fused"]["nlist"] == 32  # retrained at 2x: sqrt(1700) -> 32
        ix.delete_many(ids[:100])
        for q in random_vectors(5, seed=22):
            got = [h.id for h in ix.search(q, 10, nprobe=32)]  # all lists: exact
            assert got == brute_force(x[100:], ids[100:], q, 10)


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize("prefilter_max", [10**9, 0], ids=["prefilter", "overfetch"])
def test_filters_match_brute_force(open_index, prefilter_max):
    x = random_vectors(2000, seed=9)
    with open_index(prefilter_max=prefilter_max) as ix:
        if not isinstance(ix, VectorIndex) and prefilter_max == 0:
            pytest.skip("Milvus filters inside the search: no pre-filter vs over-fetch choice")
        ids = fill(
            ix,
            x,
            split=lambda i: "val" if i % 10 == 0 else "train",
            n=lambda i: i % 3,
            flag=lambda i: i % 3 == 1,
            s=lambda i: str(i % 3),
        )
        q = np.random.default_rng(10).standard_normal(D)
        for flt, pick in [
            ({"split": "val"}, lambda i: i % 10 == 0),
            ({"split": "val", "n": 1}, lambda i: i % 10 == 0 and i % 3 == 1),
            ({"n": 1}, lambda i: i % 3 == 1),
            ({"n": 1.0}, lambda i: i % 3 == 1),  # 1.0 == 1 as in JSON and Python
            ({"s": "1"}, lambda i: i % 3 == 1),  # strings do not match numbers ...
            ({"flag": True}, lambda i: i % 3 == 1),  # ... nor bools (True != 1 here)
        ]:
            sub = [i for i in range(2000) if pick(i)]
            hits = ix.search(q, 10, filter=flt)
            assert [h.id for h in hits] == brute_force(x[sub], [ids[i] for i in sub], q, 10), flt
            assert all(all(h.metadata[k] == v for k, v in flt.items()) for h in hits)
        assert ix.search(q, 10, filter={"split": "test"}) == []
        assert ix.search(q, 10, filter={"missing": 1}) == []
        assert len(ix.search(q, 5, filter={"split": "val"}, exclude={"v0"})) == 5


# ---------------------------------------------------------------------------- classify


def test_classify_clustered(open_index):
    names = ["dog", "cat", "car", "rain", "speech"]
    x, cluster, centers = clustered(1000, D, len(names), seed=11, spread=0.8)
    with open_index() as ix:
        assert ix.classify(x[0]).label is None  # nothing labeled yet
        # 1/4 of items are unlabeled and must not vote
        ix.upsert_many(
            Record(
                f"v{i}", {"fused": x[i]}, {"label": names[cluster[i]]} if i % 4 else {"other": 1}
            )
            for i in range(1000)
        )
        rng = np.random.default_rng(12)
        for c, name in enumerate(names):
            q = unit(centers[c] + rng.standard_normal(D) * 0.1)
            res = ix.classify(q, k=15)
            assert isinstance(res, Classification) and res.label == name
            assert len(res.neighbors) == 15 and all("label" in h.metadata for h in res.neighbors)
            assert abs(sum(res.scores.values()) - 1.0) < 1e-6 and res.scores[name] > 0.5
            assert res.to_dict()["label"] == name


# ---------------------------------------------------------------------------- durability


def test_persistence_snapshot_and_replay(tmp_path):
    x = random_vectors(600, seed=13)
    queries = random_vectors(10, seed=14)
    path = tmp_path / "ix"
    with VectorIndex(path, snapshots=True, dim=D) as ix:
        ids = fill(ix, x[:400])
    assert (path / "index.snapshot").exists()
    with VectorIndex(
        path, snapshots=True, snapshot_on_close=False
    ) as ix:  # dim read from the database
        assert ix.stats()["load"]["source"] == "snapshot" and ix.count() == 400
        ids += fill(ix, x[400:], prefix="w")  # newer than the snapshot
        for i in range(0, 100):  # deleted after the snapshot
            ix.delete(ids[i])
    with VectorIndex(
        path, snapshots=True
    ) as ix:  # old snapshot + replay of the SQLite rows newer than it
        st = ix.stats()
        assert st["load"]["source"] == "snapshot" and st["count"] == 500
        for q in queries:
            assert [h.id for h in ix.search(q, 10)] == brute_force(x[100:], ids[100:], q, 10)


def test_flat_default_has_no_snapshot_and_reopens_from_sqlite(tmp_path):
    x = random_vectors(300, seed=23)
    with VectorIndex(tmp_path, dim=D) as ix:
        ids = fill(ix, x)
        ix.delete("v0")
    assert not (tmp_path / "index.snapshot").exists()
    with VectorIndex(tmp_path) as ix:
        assert ix.stats()["load"]["source"] == "sqlite" and ix.count() == 299
        assert [h.id for h in ix.search(x[5], 3)] == brute_force(x[1:], ids[1:], x[5], 3)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "other_db"])
def test_bad_snapshot_is_ignored(tmp_path, damage):
    x = random_vectors(500, seed=15)
    path = tmp_path / "ix"
    with VectorIndex(path, snapshots=True, dim=D) as ix:
        ids = fill(ix, x)
    snap = path / "index.snapshot"
    data = bytearray(snap.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 3] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "empty":
        data = bytearray()
    else:
        with VectorIndex(tmp_path / "other", dim=D, snapshots=True) as other:
            fill(other, random_vectors(50, seed=16))
        data = bytearray((tmp_path / "other" / "index.snapshot").read_bytes())
    snap.write_bytes(bytes(data))
    (path / "index.snapshot.tmp-999").write_bytes(b"partial")  # a crashed writer's temp file
    with VectorIndex(path, snapshots=True) as ix:
        assert ix.stats()["load"]["source"] == "sqlite"
        assert not (path / "index.snapshot.tmp-999").exists()
        q = random_vectors(1, seed=17)[0]
        assert [h.id for h in ix.search(q, 10)] == brute_force(x, ids, q, 10)
    with VectorIndex(path, snapshots=True) as ix:  # the close rewrote a good snapshot
        assert ix.stats()["load"]["source"] == "snapshot"


_WRITER = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from server.index import VectorIndex
ix = VectorIndex({path!r}, dim={dim}, snapshots=True, snapshot_every=40)
print("ready", flush=True)
i = 0
while True:
    v = np.random.default_rng(i).standard_normal({dim})
    item = f"c{{i % 500}}"  # after 500 writes, upserts replace earlier items
    ix.upsert(item, {{"fused": v}}, metadata={{"i": i}})
    print(item, i, flush=True)
    i += 1
"""


def test_kill9_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "ix"
    script = _WRITER.format(root=str(ROOT), path=str(path), dim=D)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        acked: dict[str, int] = {}
        writes = 0
        deadline = time.monotonic() + 20
        while writes < 700 and time.monotonic() < deadline:
            item, i = proc.stdout.readline().split()
            acked[item] = int(i)  # the latest acknowledged write of each id
            writes += 1
        assert writes >= 100, "the writer was too slow to test anything"
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream, possibly mid-snapshot
        proc.wait(timeout=10)
        for line in proc.stdout:  # lines written before the kill are acknowledged too
            parts = line.split()
            if len(parts) == 2:
                acked[parts[0]] = int(parts[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with VectorIndex(path) as ix:
        assert ix.count() >= len(acked)
        for item, i in acked.items():
            got = ix.get(item)
            assert got is not None, item
            assert (
                got.metadata["i"] >= i
            )  # this write or a later one (unacknowledged but committed)
            v = np.random.default_rng(got.metadata["i"]).standard_normal(D)
            assert ix.search(v, 1)[0].id == item


def test_concurrent_readers_and_writer(tmp_path):
    x = random_vectors(2000, seed=18)
    errors: list[BaseException] = []
    stop = threading.Event()
    with VectorIndex(tmp_path, dim=D, compact_at=64) as ix:
        fill(ix, x[:1000])

        def writer():
            try:
                for i in range(1000, 1400):
                    ix.upsert(f"v{i}", {"fused": x[i]}, metadata={"n": i % 2})
                    if i % 3 == 0:
                        ix.delete(f"v{i - 700}")
            except BaseException as exc:
                errors.append(exc)
            finally:
                stop.set()

        def reader(seed):
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    q = rng.standard_normal(D)
                    hits = ix.search(q, 10, filter={"n": 1} if rng.random() < 0.3 else None)
                    scores = [h.score for h in hits]
                    assert scores == sorted(scores, reverse=True)
                    assert len({h.id for h in hits}) == len(hits)
                    ix.classify(q, 5)
                    ix.list(limit=5)
                    ix.stats()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer)] + [
            threading.Thread(target=reader, args=(s,)) for s in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        deleted = {f"v{i - 700}" for i in range(1000, 1400) if i % 3 == 0}
        live = [i for i in range(1400) if f"v{i}" not in deleted]
        q = random_vectors(1, seed=19)[0]
        assert [h.id for h in ix.search(q, 10)] == brute_force(
            x[live], [f"v{i}" for i in live], q, 10
        )


def test_server_index_does_not_import_torch():
    code = "import sys, server.index; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
