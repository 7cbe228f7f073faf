"""``pemt import avbert``: what it refuses (without running anything), and the whole path from an
AVBERT checkpoint to a served embedding of a real clip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from pemt.model.avbert import AVBertImportError, read_checkpoint
from pemt.model.checkpoint import load
from server.testing import ServerProcess

GOLDEN = Path(__file__).parent / "data" / "avbert-golden"
ROOT = Path(__file__).resolve().parent.parent
# what the tiny AVBERT's shapes cannot tell (tests/data/avbert-golden/tiny/config.json)
TINY_BASE = {
    "name": "avbert-tiny",
    "media": {"fps": 15, "frames_per_segment": 4, "num_segments": 2, "image_size": 48},
    "heads": 2,
    "layers": 2,
    "positions": 8,
}


def pemt_cli(*args: object, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pemt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def base_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pemt.config import get_config

    cfg = get_config("paper").replace(**TINY_BASE)
    p = tmp_path_factory.mktemp("avbert") / "avbert-tiny.json"
    p.write_text(cfg.to_json())
    return p


class _RunsCode:
    """Unpickling this calls os.system: what a hostile "checkpoint" does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.pyth"
    sd = read_checkpoint(GOLDEN / "tiny" / "checkpoint.pyth")
    torch.save({"model_state_dict": sd, "note": _RunsCode(marker)}, bad)
    with pytest.raises(AVBertImportError, match=r"refused without running it: .*system"):
        read_checkpoint(bad)
    r = pemt_cli("import", "avbert", bad, "--out", tmp_path / "x.safetensors")
    assert r.returncode == 2 and not marker.exists()
    assert len(r.stderr.strip().splitlines()) == 1 and "refused" in r.stderr, r.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_truncated_and_garbage_files_give_one_line(tmp_path: Path) -> None:
    data = (GOLDEN / "tiny" / "checkpoint.pyth").read_bytes()
    cases = {
        "cut.pyth": data[: len(data) // 2],
        "empty.pyth": b"",
        "garbage.pyth": b"\x00\x01 not a checkpoint" * 50,
        "cut.safetensors": (GOLDEN / "tiny" / "weights.safetensors").read_bytes()[:5000],
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        r = pemt_cli("import", "avbert", tmp_path / name, "--out", tmp_path / "x.safetensors")
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        line = r.stderr.strip()
        assert len(line.splitlines()) == 1 and "not a readable" in line, (name, line)
    r = pemt_cli("import", "avbert", tmp_path / "nowhere.pyth", "--out", tmp_path / "x.safetensors")
    assert r.returncode == 2 and "no checkpoint at" in r.stderr


def test_other_models_checkpoints_are_named_as_such(tmp_path: Path) -> None:
    from pemt.config import get_config
    from pemt.model import build_model, save

    ours = tmp_path / "pemt.safetensors"
    save(build_model(get_config("tiny")), ours)  # a PEMT checkpoint, not AVBERT's
    resnet = tmp_path / "resnet.pth"
    torch.save(
        {"state_dict": {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.bias": torch.zeros(2)}}, resnet
    )
    for path in (ours, resnet):
        with pytest.raises(AVBertImportError, match="not an AVBERT checkpoint"):
            read_checkpoint(path)
    odd = tmp_path / "odd.pth"
    torch.save({"epoch": 3, "weights": [1, 2]}, odd)
    with pytest.raises(AVBertImportError, match="no 'model_state_dict' or 'state_dict'"):
        read_checkpoint(odd)
    visual_only = tmp_path / "visual.pth"
    sd = read_checkpoint(GOLDEN / "tiny" / "checkpoint.pyth")
    torch.save(
        {"state_dict": {f"avbert.{k}": v for k, v in sd.items() if k.startswith("visual_conv")}},
        visual_only,
    )
    r = pemt_cli("import", "avbert", visual_only, "--out", tmp_path / "x.safetensors")
    assert r.returncode == 2 and "not a whole AVBert" in r.stderr, r.stderr


def test_missing_mismatched_and_unknown_keys_are_listed(tmp_path: Path, base_json: Path) -> None:
    sd = read_checkpoint(GOLDEN / "tiny" / "checkpoint.pyth")
    broken = dict(sd)
    del broken["audio_fc.bias"]
    broken["visual_norm.weight"] = torch.zeros(7)
    broken["visual_conv.s9.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pyth"
    torch.save({"model_state_dict": {f"avbert.{k}": v for k, v in broken.items()}}, path)
    r = pemt_cli("import", "avbert", path, "--out", tmp_path / "x.safetensors", "--base", base_json)
    assert r.returncode == 2
    msg = r.stderr.strip()
    assert len(msg.splitlines()) == 1
    assert "missing 1 tensors: [audio_fc.bias]" in msg
    assert "visual_norm.weight: (7,), expected (32,)" in msg
    assert "no place in the model: [visual_conv.s9.extra.weight]" in msg
    tampered = dict(sd)
    key = "transformer.encoder.albert_layer_groups.0.albert_layers.0.factor_ffn.orthogonal_ms1_linear._B"
    tampered[key] = tampered[key] + 0.01  # the cached rotation no longer matches A and base
    path = tmp_path / "tampered.pyth"
    torch.save({"model_state_dict": {f"avbert.{k}": v for k, v in tampered.items()}}, path)
    r = pemt_cli("import", "avbert", path, "--out", tmp_path / "x.safetensors", "--base", base_json)
    assert r.returncode == 2 and "cached rotations _B differ" in r.stderr


def test_position_table_bounds_the_segments(tmp_path: Path, base_json: Path) -> None:
    ckpt = GOLDEN / "tiny" / "checkpoint.pyth"
    r = pemt_cli(
        "import",
        "avbert",
        ckpt,
        "--out",
        tmp_path / "x.safetensors",
        "--base",
        base_json,
        "--segments",
        8,
    )
    assert r.returncode == 2 and "hold at most 7 segments" in r.stderr and "--segments" in r.stderr


@pytest.mark.slow
def test_avbert_checkpoint_to_served_embedding(
    tmp_path: Path, base_json: Path, sample_media: dict[str, Path]
) -> None:
    """AVBERT's file -> pemt import avbert -> export/build_engine.py -> the service embeds a real
    H.264/AAC clip, and its vector is the imported model's own output for that clip."""
    ckpt = tmp_path / "imported.safetensors"
    r = pemt_cli(
        "import", "avbert", GOLDEN / "tiny" / "checkpoint.pyth", "--out", ckpt,
        "--base", base_json, "--head-out", tmp_path / "head.safetensors",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "mapped 467 tensors (74,536 parameters)" in r.stdout
    assert "264 aliases" in r.stdout and "18 cached rotations" in r.stdout
    model = load(ckpt)
    assert model.cfg.media.frames_per_segment == 4 and model.cfg.positions == 8

    repo = tmp_path / "repo"
    res = subprocess.run(
        [sys.executable, "export/build_engine.py", "--checkpoint", ckpt, "--out", repo, "--format", "onnx"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    data = tmp_path / "data"
    srv = ServerProcess(
        {"PEMT_MODEL_PATH": str(repo), "PEMT_DATA_DIR": str(data)}, log_path=tmp_path / "server.log"
    )
    srv.start()
    try:
        clip = sample_media["clip"]
        with open(clip, "rb") as f:
            resp = httpx.post(
                srv.url + "/embed",
                files={"file": ("clip.mp4", f, "video/mp4")},
                data={"id": "real", "metadata": json.dumps({"from": "avbert"})},
                timeout=120,
            )
        assert resp.status_code == 200, resp.text
        items = resp.json()["items"]
        assert items and items[0]["id"].startswith("real")
        served = torch.tensor(items[0]["embedding"])
        info = httpx.get(srv.url + "/info", timeout=10).json()
        assert info["count"] == len(items)
    finally:
        srv.stop()

    from pemt.media import batch_windows, load_windows

    window = load_windows(clip, model.cfg.media)[0]
    x = {k: torch.from_numpy(v) for k, v in batch_windows([window], model.cfg.media).items()}
    with torch.no_grad():
        want = model(x["frames"], x["audio"], x["visual_mask"], x["audio_mask"])["embedding"][0]
    assert torch.allclose(served, want, atol=1e-4), float((served - want).abs().max())
