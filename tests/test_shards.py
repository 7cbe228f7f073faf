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


@pytest.fixture(scope="module")
def wds_shards(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same three samples written by webdataset's own TarWriter, plain and gzipped; two of
    them share a basename (``dog/x`` and ``cat/x``)."""
    import webdataset as wds

    root = tmp_path_factory.mktemp("wds")
    clip = (video_dir / "cat" / "a.mp4").read_bytes()
    other = (video_dir / "dog" / "c.mp4").read_bytes()
    samples = [
        {"__key__": "dog/x", "mp4": other, "json": {"label": "dog"}},
        {"__key__": "cat/x", "mp4": clip, "json": {"label": "cat"}},
        {"__key__": "cat/y", "mp4": clip, "json": {"label": "cat"}},
    ]
    paths = {"tar": root / "keys.tar", "gz": root / "keys.tar.gz"}
    for path in paths.values():
        with wds.TarWriter(str(path)) as sink:
            for sample in samples:
                sink.write(sample)
    return paths


def _keys_and_labels(samples: list[dict]) -> list[tuple[str, str]]:
    return [(s["__key__"], json.loads(s["json"])["label"]) for s in samples]


def test_webdataset_keys_with_directories_stay_apart(
    wds_shards: dict[str, Path], video_dir: Path
) -> None:
    """Keys are full member paths, as webdataset groups them: dog/x and cat/x are two samples."""
    import webdataset as wds

    got = list(iter_samples(str(wds_shards["tar"])))
    assert _keys_and_labels(got) == [("dog/x", "dog"), ("cat/x", "cat"), ("cat/y", "cat")]
    assert got[0]["mp4"] == (video_dir / "dog" / "c.mp4").read_bytes()
    assert got[1]["mp4"] == (video_dir / "cat" / "a.mp4").read_bytes()
    # the same grouping as webdataset's own reader
    theirs = list(wds.WebDataset(str(wds_shards["tar"]), shardshuffle=False))
    assert [s["__key__"] for s in theirs] == [s["__key__"] for s in got]
    assert inspect_shards(str(wds_shards["tar"]))["labels"] == {"cat": 2, "dog": 1}


def test_gzipped_and_piped_shards_read_like_plain_ones(
    wds_shards: dict[str, Path], tmp_path: Path
) -> None:
    want = _keys_and_labels(list(iter_samples(str(wds_shards["tar"]))))
    assert _keys_and_labels(list(iter_samples(str(wds_shards["gz"])))) == want
    assert _keys_and_labels(list(iter_samples(f"pipe:cat {wds_shards['gz']}"))) == want
    # a directory spec picks up .tar.gz shards too
    assert sorted(expand_urls(wds_shards["tar"].parent)) == sorted(
        str(p) for p in wds_shards.values()
    )
    # a command that fails is a damaged shard, reported, not a crash or a silent empty shard
    errors: list[str] = []
    assert list(iter_samples(f"pipe:cat {tmp_path / 'missing.tar'}", errors)) == []
    assert len(errors) == 1 and "missing.tar" in errors[0]
    with pytest.raises(ValueError, match="missing.tar"):
        list(iter_samples(f"pipe:cat {tmp_path / 'missing.tar'}"))
    # stopping early ends the command instead of leaving it running
    first = next(iter(iter_samples(f"pipe:cat {wds_shards['tar']}")))
    assert first["__key__"] == "dog/x"


def test_http_shards_are_read_through_webdataset(wds_shards: dict[str, Path]) -> None:
    """An http:// shard from a real HTTP server on loopback (webdataset opens it with curl)."""
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    if shutil.which("curl") is None:
        pytest.skip("webdataset reads http:// shards with curl, which is not installed")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    serve = functools.partial(Quiet, directory=str(wds_shards["tar"].parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), serve) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{httpd.server_address[1]}"
            urls = expand_urls(f"{base}/keys.tar,{base}/keys.tar.gz")
            assert urls == [f"{base}/keys.tar", f"{base}/keys.tar.gz"]
            for url in urls:
                assert [s["__key__"] for s in iter_samples(url)] == ["dog/x", "cat/x", "cat/y"]
                assert all(s["__url__"] == url for s in iter_samples(url))
        finally:
            httpd.shutdown()
