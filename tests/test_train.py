"""Loader determinism/resume, trainer: loss falls, exact resume, SIGTERM, checkpoint loads.

Real media throughout: the synthetic H.264/AAC set (pemt.data.synth) packed into shards, the
`tiny` model on CPU.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import tarfile
import threading
from pathlib import Path

import pytest
import torch

import pemt
from pemt.config import get_config
from pemt.data.synth import make_synth_dataset
from pemt.train.data import ShardLoader
from pemt.train.shards import make_shards
from pemt.train.trainer import PretrainHeads, TrainConfig, TrainStep, train

CFG = get_config("tiny")


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine oversubscribed threads are 10x+ slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synth_dataset(root / "videos", 14, classes=3, seconds=3, width=64, height=48, fps=8,
                       sample_rate=8000, progress=False)  # fmt: skip
    out = root / "shards"
    make_shards(root / "videos", out, shard_size=5, progress=False, decode_check=False)
    # a sample that is in a shard but does not decode: skipped and counted by the loader
    with tarfile.open(out / "shard-000002.tar", "a") as tar:
        for name, data in (("99999999.mp4", b"\x00\x00\x00\x18ftypmp42 broken" * 20),
                           ("99999999.json", json.dumps({"ext": "mp4", "label": "bad"}).encode())):  # fmt: skip
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return out


def _keys(batches: list[dict]) -> list[list[str]]:
    return [b["key"] for b in batches]


def _take(loader: ShardLoader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_loader_deterministic_resumable_and_skips_bad(shards: Path) -> None:
    kw = dict(batch_size=3, seed=7, num_workers=2, shuffle_buffer=4)
    a = ShardLoader(str(shards), CFG.media, **kw)
    first = _take(a, 7)  # 21 samples: crosses the epoch boundary (14 good + 1 bad per epoch)
    assert a.bad_samples >= 1
    assert _keys(_take(ShardLoader(str(shards), CFG.media, **kw), 7)) == _keys(first)

    b = ShardLoader(str(shards), CFG.media, **kw)
    it = iter(b)
    head = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(b.state_dict()))  # plain data: goes into a checkpoint
    del it
    resumed = _take(ShardLoader(str(shards), CFG.media, **kw, state=state), 4)
    assert _keys(head + resumed) == _keys(first)
    for x, y in zip(resumed, first[3:], strict=True):
        assert torch.equal(x["frames"], y["frames"]) and torch.equal(x["audio"], y["audio"])
    assert first[0]["frames"].shape == (3, 4, 4, 32, 32, 3)
    assert first[0]["frames"].dtype == torch.uint8 and first[0]["visual_mask"].dtype == torch.bool
    assert set(first[0]["label"]) <= {"apple", "banana", "cherry"}
    # a different seed gives a different order
    other = _take(ShardLoader(str(shards), CFG.media, **{**kw, "seed": 8}), 2)
    assert _keys(other) != _keys(first[:2])


def test_decode_cache_gives_the_same_batches_and_decodes_once(
    shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pemt.train.data as data

    calls: list[str] = []
    real = data.decode_sample

    def counted(sample, *a, **k):  # the real decoder, counted
        calls.append(sample["__key__"])
        return real(sample, *a, **k)

    monkeypatch.setattr(data, "decode_sample", counted)
    kw = dict(batch_size=3, seed=3, num_workers=0, shuffle_buffer=4, views=True)
    n = 12  # 36 samples: more than two epochs of 14 good + 1 bad
    plain = _take(ShardLoader(str(shards), CFG.media, **kw), n)
    plain_calls = len(calls)
    calls.clear()
    cached = _take(ShardLoader(str(shards), CFG.media, **kw, decode_cache_bytes=64 << 20), n)
    for x, y in zip(plain, cached, strict=True):
        assert x["key"] == y["key"]
        for k in ("frames", "audio", "visual_mask", "audio_mask", "frames_b", "audio_b"):
            assert torch.equal(x[k], y[k]), k
    # every good clip decoded once; the bad one is tried again each epoch (and skipped again)
    assert len(set(calls) - {"99999999"}) == 14 and len(calls) - calls.count("99999999") == 14
    assert plain_calls >= 36 and calls.count("99999999") >= 2
    calls.clear()
    _take(ShardLoader(str(shards), CFG.media, **kw, decode_cache_bytes=1), n)  # budget too small
    assert len(calls) == plain_calls  # nothing kept: decoded every time, as without a cache


def test_loader_splits_ranks_disjointly(shards: Path) -> None:
    seen = []
    for rank in range(2):
        loader = ShardLoader(str(shards), CFG.media, batch_size=1, num_workers=0, rank=rank,
                             world_size=2, shuffle_buffer=1)  # fmt: skip
        keys: list[str] = []
        for b in loader:
            if loader.state_dict()["workers"][0]["epoch"] > 0:
                break
            keys += b["key"]
        assert len(keys) == len(set(keys))
        seen.append(set(keys))
    assert not seen[0] & seen[1] and seen[0] and seen[1]
    assert len(seen[0] | seen[1]) == 14  # every good sample, once, in the first epoch


def _random_batch(b: int = 4) -> dict[str, torch.Tensor]:
    from pemt.spec import model_inputs

    g = torch.Generator().manual_seed(0)
    out: dict[str, torch.Tensor] = {}
    for sp in model_inputs(CFG):
        shape = (b, *sp.shape)
        if sp.dtype == "uint8":
            out[sp.name] = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        elif sp.dtype == "bool":
            out[sp.name] = torch.ones(shape, dtype=torch.bool)
        else:
            out[sp.name] = torch.randn(shape, generator=g)
    out["visual_mask"][0, 3:] = False  # padding in one row
    return out


def test_loss_falls_and_checkpointing_matches() -> None:
    torch.manual_seed(0)
    tc = TrainConfig(steps=12, lr=1e-3, num_negatives=4)
    step = TrainStep(pemt_model := __import__("pemt.model", fromlist=["x"]).build_model(CFG),
                     PretrainHeads(CFG, tc), tc)  # fmt: skip
    opt = torch.optim.AdamW(step.parameters(), lr=1e-3)
    batch = _random_batch()
    losses = []
    for _ in range(12):
        loss, parts = step(batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(lambda x: x == x, losses))
    assert min(losses[-3:]) < 0.8 * losses[0], losses
    # activation checkpointing over one chunk computes the same loss and gradients
    pemt_model.eval()  # no BatchNorm statistics updates, no dropout: comparable passes
    results = []
    for ckpt in (False, True):
        tc.activation_checkpointing, tc.checkpoint_chunk = ckpt, 64
        step.zero_grad()
        loss, _ = step(batch, torch.Generator().manual_seed(1))
        loss.backward()
        results.append((loss.item(), pemt_model.visual_cnn.stem[0].weight.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


def _tc(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-3, warmup=1, num_negatives=4, checkpoint_every=2,
                keep=5, log_every=1, workers=0, shuffle_buffer=4, seed=3, progress=False)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return pemt.load(path).state_dict()


def test_resume_continues_exactly_and_checkpoint_loads(shards: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    last = train(CFG, str(shards), full, _tc())
    assert last["exit"] == "done" and last["final_step"] == 4
    assert (full / "latest").read_text().strip() == "step-0000004"
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert any(p.name.startswith("events.") for p in (full / "tb").iterdir())

    # an interrupted run: only the step-2 checkpoint survived
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    for suffix in (".safetensors", ".train.pt"):
        shutil.copy(full / "checkpoints" / f"step-0000002{suffix}", part / "checkpoints")
    (part / "latest").write_text("step-0000002\n")
    state = torch.load(part / "checkpoints" / "step-0000002.train.pt", weights_only=True)
    assert state["step"] == 2 and state["loader"][0]["batches"] == 2
    resumed = train(CFG, str(shards), part, _tc(), resume=True)
    assert resumed["final_step"] == 4
    rec2 = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rec2] == [3, 4]
    assert rec2[0]["loss"] == records[2]["loss"]  # the same next batch, masks, negatives
    a, b = _weights(full / "model.safetensors"), _weights(part / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    # the trained checkpoint is a normal PEMT checkpoint
    model = pemt.load(full / "model.safetensors")
    out = model(**{k: v[:2] for k, v in _random_batch().items()})
    assert out["embedding"].shape == (2, CFG.hidden) and torch.isfinite(out["embedding"]).all()
    with pytest.raises(ValueError, match="no checkpoint"):
        train(CFG, str(shards), tmp_path / "empty", _tc(), resume=True)


def test_sigterm_saves_and_resume_finishes(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        last = train(CFG, str(shards), out, _tc(steps=200, checkpoint_every=1000))
    finally:
        timer.cancel()
    assert last["exit"] == "sigterm" and 1 <= last["final_step"] < 200
    stopped = last["final_step"]
    assert (out / "latest").read_text().strip() == f"step-{stopped:07d}"
    assert not (out / "model.safetensors").exists()
    done = train(CFG, str(shards), out, _tc(steps=stopped + 1, checkpoint_every=1000), resume=True)
    assert done["exit"] == "done" and done["final_step"] == stopped + 1


def test_loader_views_are_seeded_edited_copies(shards: Path) -> None:
    kw = dict(batch_size=3, seed=5, num_workers=0, shuffle_buffer=4, views=True)
    a, b = (
        _take(ShardLoader(str(shards), CFG.media, **kw), 2),
        _take(ShardLoader(str(shards), CFG.media, **kw), 2),
    )
    plain = _take(ShardLoader(str(shards), CFG.media, **{**kw, "views": False}), 2)
    for x, y, p in zip(a, b, plain, strict=True):
        assert x["key"] == p["key"]  # the same windows, edited
        for k in ("frames", "audio", "visual_mask", "audio_mask"):
            for name in (k, f"{k}_b"):
                assert torch.equal(x[name], y[name]), name  # same seed, same views
                assert x[name].shape == p[k].shape and x[name].dtype == p[k].dtype
        assert not torch.equal(x["frames"], x["frames_b"])  # two different views
        assert not torch.equal(x["frames"], p["frames"])


def test_robust_recipe_trains_and_init_starts_from_a_checkpoint(
    shards: Path, tmp_path: Path
) -> None:
    first = train(CFG, str(shards), tmp_path / "a", _tc(steps=2, recipe="robust"))
    assert first["exit"] == "done"
    for k in ("cons_fused", "cons_visual", "cons_audio"):
        assert first[k] == first[k] and first[k] > 0, k  # computed, not NaN
    start = tmp_path / "a" / "model.safetensors"
    # lr 0: the weights stay the init's (BatchNorm running statistics still move)
    tuned = train(
        CFG, str(shards), tmp_path / "b", _tc(steps=1, lr=0.0, recipe="robust", init=str(start))
    )
    assert tuned["exit"] == "done"
    a, b = pemt.load(start), pemt.load(tmp_path / "b" / "model.safetensors")
    params_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        assert torch.equal(p, params_b[name]), name
    fresh = train(CFG, str(shards), tmp_path / "c", _tc(steps=1, lr=0.0))
    assert fresh["exit"] == "done"
    c = dict(pemt.load(tmp_path / "c" / "model.safetensors").named_parameters())
    assert any(not torch.equal(p, c[n]) for n, p in a.named_parameters())
    with pytest.raises(ValueError, match="differs from --config"):
        train(get_config("small"), str(shards), tmp_path / "d", _tc(steps=1, init=str(start)))
