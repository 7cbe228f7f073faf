"""Shards: write/read round trip with real H.264/AAC files, a corrupt file skipped and listed."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from pemt.cli import main
from pemt.media.encode import make_test_video
from pemt.train.shards import expand_urls, inspect_shards, iter_samples, make_shards


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    make_test_video(root / "cat" / "a.mp4", seconds=2, width=64, height=48, pattern=1)
    make_test_video(root / "cat" / "b.webm", seconds=1, width=64, height=48, video_codec="vp9",
                    audio_codec="opus")  # fmt: skip
    make_test_video(root / "dog" / "c.mp4", seconds=3, width=64, height=48, pattern=2)
    make_test_video(root / "dog" / "silent.mp4", seconds=2, width=64, height=48, audio_codec=None)
    (root / "dog" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (root / "notes.txt").write_text("not a video, not even looked at")
    return root


def test_make_and_read_round_trip(video_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    report = make_shards(video_dir, out, shard_size=2, progress=False)
    assert report.written == 4
    assert [Path(p).name for p, _ in report.skipped] == ["corrupt.mp4"]
    assert (
        (out / "skipped.txt").read_text().startswith(str(video_dir / "dog" / "corrupt.mp4") + "\t")
    )
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]

    samples = [s for url in expand_urls(out) for s in iter_samples(url)]
    assert len(samples) == 4
    by_source = {json.loads(s["json"])["source"]: s for s in samples}
    for rel, label in [("cat/a.mp4", "cat"), ("cat/b.webm", "cat"), ("dog/c.mp4", "dog")]:
        src = video_dir / rel
        s = by_source[str(src.resolve())]
        meta = json.loads(s["json"])
        assert meta["label"] == label
        assert s[meta["ext"]] == src.read_bytes()  # the encoded bytes as-is
        assert meta["has_audio"] and meta["has_video"]
    silent = json.loads(by_source[str((video_dir / "dog" / "silent.mp4").resolve())]["json"])
    assert silent["has_audio"] is False
    assert silent["duration"] == pytest.approx(2.0, abs=0.2)

    summary = inspect_shards(str(out / "shard-{000000..000001}.tar"))
    assert summary["samples"] == 4 and summary["labels"] == {"cat": 2, "dog": 2}
    assert summary["total_duration_s"] == pytest.approx(8.0, abs=0.5)
    assert summary["without_audio"] == 1 and summary["extensions"] == {"mp4": 3, "webm": 1}
    # any tar reader reads them: members are key.ext pairs
    with tarfile.open(out / "shard-000000.tar") as tar:
        assert [m.name for m in tar.getmembers()] == ["00000000.mp4", "00000000.json",
                                                      "00000001.webm", "00000001.json"]  # fmt: skip


def test_labels_csv_and_deterministic_bytes(video_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\ncat/a.mp4,tabby\nc.mp4,hound\n")
    a = make_shards(video_dir, tmp_path / "a", labels_csv=csv, progress=False, decode_check=False)
    make_shards(video_dir, tmp_path / "b", labels_csv=csv, progress=False, decode_check=False)
    assert a.labels == {"tabby": 1, "hound": 1, "(none)": 2}
    assert (tmp_path / "a" / "shard-000000.tar").read_bytes() == (
        tmp_path / "b" / "shard-000000.tar"
    ).read_bytes()


def test_urls_globs_pipes_and_damaged_shard(video_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    make_shards(video_dir, out, shard_size=3, progress=False, decode_check=False)
    assert len(expand_urls(f"{out}/*.tar")) == 2
    assert len(expand_urls(f"{out}/shard-000000.tar,{out}/shard-000001.tar")) == 2
    piped = list(iter_samples(f"pipe:cat {out}/shard-000000.tar"))
    assert [s["__key__"] for s in piped] == ["00000000", "00000001", "00000002"]
    with pytest.raises(ValueError, match="does not exist"):
        expand_urls(str(tmp_path / "missing.tar"))

    whole = (out / "shard-000000.tar").read_bytes()
    bad = tmp_path / "truncated.tar"
    bad.write_bytes(whole[: len(whole) // 2])
    errors: list[str] = []
    got = list(iter_samples(str(bad), errors))  # no exception: what was readable, then stop
    assert len(got) < 3 and len(errors) == 1 and "truncated.tar" in errors[0]


def test_cli_make_and_inspect(
    video_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    assert main(["shards", "make", str(video_dir), str(out), "--quiet", "--probe-only"]) == 0
    text = capsys.readouterr().out
    assert "wrote 4 videos" in text and "skipped 1 files" in text and "corrupt.mp4" in text
    assert main(["shards", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "samples: 4" in text and "cat=2" in text and "dog=2" in text
    assert main(["shards", "make", str(tmp_path / "nowhere"), str(out)]) == 2
