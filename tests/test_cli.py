"""The `pemt` command line as a user runs it: a subprocess, real files, exit codes, output."""

import json
import subprocess
import sys

import pytest

PEMT = [sys.executable, "-m", "pemt.cli"]


def run(*args, check=True):
    out = subprocess.run([*PEMT, *map(str, args)], capture_output=True, text=True, timeout=240)
    if check and out.returncode != 0:
        raise AssertionError(f"pemt {args} failed ({out.returncode}):\n{out.stderr}")
    return out


def test_params_reproduce_the_paper():
    doc = json.loads(run("params", "--config", "paper", "--json").stdout)
    tr = {mode: doc["modes"][mode]["transformers"] for mode in ("none", "layers", "full")}
    # AVBERT's measured counts (DESIGN.md) and the paper's 128M -> 22M -> 4M, within 5%.
    for mode, want in {"none": 127.6e6, "layers": 21.3e6, "full": 3.8e6}.items():
        assert abs(tr[mode] - want) / want < 0.05, (mode, tr[mode])
    assert 155e6 <= doc["modes"]["none"]["total"] <= 168e6


def test_embed_prints_windows_and_similarities(sample_media):
    clip, long_clip = sample_media["clip"], sample_media["long"]
    doc = json.loads(run("embed", clip, long_clip, clip, "--config", "tiny", "--json").stdout)
    files = doc["files"]
    assert [f["file"] for f in files] == [str(clip), str(long_clip), str(clip)]
    # tiny: 4-s windows, default stride 2 s; a 9-s clip needs windows up to its end.
    starts = [w["start"] for w in files[1]["windows"]]
    assert starts[:3] == [0.0, 2.0, 4.0] and files[1]["windows"][-1]["end"] >= 9.0 - 1e-3
    assert len(files[0]["windows"]) == 1 and files[0]["windows"][0]["end"] == pytest.approx(
        3.0, abs=0.05
    )
    assert all(abs(w["norm"] - 1) < 1e-3 for f in files for w in f["windows"])
    sim = doc["similarity"]
    assert sim[0][2] == pytest.approx(1.0, abs=1e-4)  # the same file twice
    assert sim[0][1] == pytest.approx(sim[1][0], abs=1e-6) and sim[0][1] < 0.9999


def test_embed_with_checkpoint_is_deterministic(tmp_path, sample_media):
    import torch

    import pemt
    from pemt.model import build_model

    torch.manual_seed(3)
    ckpt = tmp_path / "tiny.safetensors"
    pemt.save(build_model(pemt.get_config("tiny")), ckpt)
    a = json.loads(
        run(
            "embed", sample_media["clip"], sample_media["webm"], "--checkpoint", ckpt, "--json"
        ).stdout
    )
    b = json.loads(
        run(
            "embed", sample_media["clip"], sample_media["webm"], "--checkpoint", ckpt, "--json"
        ).stdout
    )
    assert a["config"] == "tiny" and a["similarity"] == b["similarity"]


@pytest.mark.parametrize("bad", ["corrupt", "truncated", "empty", "png", "text"])
def test_bad_file_is_one_line_and_nonzero(sample_media, bad):
    out = run("embed", sample_media[bad], "--config", "tiny", check=False)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("pemt embed: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr


def test_missing_file_and_unknown_config():
    out = run("embed", "/nonexistent/clip.mp4", check=False)
    assert out.returncode == 2 and "no such file" in out.stderr
    out = run("params", "--config", "huge", check=False)
    assert (
        out.returncode == 2 and "available configs" in out.stderr and "Traceback" not in out.stderr
    )
