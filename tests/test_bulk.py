"""`pemt index bulk` on a local Ray instance against the real service: 40 files, 5 of them bad,
give 35 clips and 5 errors in the report; a second run does nothing; a bulk clip equals what
/embed computes for the same file; vectors from another model are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.sdk import PemtClient, PemtError
from pemt.media.encode import make_test_video
from server.testing import ServerProcess

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BAD = {"bad/random.mp4", "bad/empty.mp4", "bad/text.mp4", "bad/truncated.mp4", "bad/image.mp4"}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bulk-library")
    for i in range(35):
        folder = root / ("lectures" if i % 2 else "films") / f"part {i // 10}"
        folder.mkdir(parents=True, exist_ok=True)
        make_test_video(
            folder / f"clip{i:02d}.mp4",
            seconds=2 + i % 4,
            width=32,
            height=24,
            fps=4,
            pattern=i % 7,
            audio_codec="aac" if i % 3 == 0 else None,
            sample_rate=8000,
            channels=1,
        )
    bad = root / "bad"
    bad.mkdir()
    good = (root / "films" / "part 0" / "clip00.mp4").read_bytes()
    rng = np.random.default_rng(0)
    (bad / "random.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("not a video\n" * 100)
    (bad / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (bad / "image.mp4").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("bulk-data")
    env = {"PEMT_MODEL_PATH": str(repo), "PEMT_DATA_DIR": str(data)}
    srv = ServerProcess(env, log_path=data / "server.log").start()
    yield srv
    srv.stop()


def _bulk(library: Path, server: ServerProcess, repo: Path, out: Path) -> tuple[int, dict, str]:
    cmd = [
        sys.executable, "-m", "pemt.cli", "index", "bulk", str(library), "--url", server.url,
        "--model-repository", str(repo), "--workers", "2", "--model-threads", "1",
        "--results", str(out / "results.jsonl"), "--report", str(out / "report.json"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=out)
    report = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    return res.returncode, report, res.stderr


def test_bulk_index_a_library_with_bad_files_then_again(
    library: Path, server: ServerProcess, repo: Path, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    code, report, err = _bulk(library, server, repo, tmp_path)
    first_s = time.monotonic() - t0
    assert code == 1, err[-3000:]  # some files failed: they are in the report
    assert report["files"] == 40 and report["indexed"] == 35 and report["failed"] == 5, report
    failed = {os.path.relpath(e["path"], library): e for e in report["errors"]}
    assert set(failed) == BAD, failed
    assert all(e["code"] and e["message"] for e in failed.values())
    assert "35 indexed, 5 failed" in err  # progress on stderr
    assert set(report["seconds"]) >= {"decode", "model", "index", "wall", "ray_start"}

    with PemtClient(server.url) as c:
        clip = "films:part_0:clip04.mp4"  # the path relative to the folder, as an id
        page = c.list(clip_id=clip)
        assert page.total >= 1 and page.items[0].metadata["clip_id"] == clip
        # the same windows and vectors as an upload of the same file
        path = library / "films" / "part 0" / "clip04.mp4"
        uploaded = c.embed(path, store=False)
        stored = [c.get(it.id, vectors=True) for it in page.items]
        assert [s.start for s in stored] == [it.start for it in uploaded.items]
        for s, it in zip(stored, uploaded.items, strict=True):
            np.testing.assert_allclose(s.vectors["fused"], it.embedding, atol=1e-5)  # type: ignore[index]
        assert c.thumbnail(page.items[0].id)[:2] == b"\xff\xd8"
        clips = {it.clip_id for it in c.iter_clips(page_size=500)}
        assert len(clips) == 35

        # vectors from another model are refused, whatever else is right
        identity = c.info()["model"]["identity"]
        window = {"window": 0, "start": 0.0, "end": 2.0, "has_audio": False, "has_video": True,
                  "vectors": {"fused": [1.0] * 32, "visual": [1.0] * 32}}  # fmt: skip
        with pytest.raises(PemtError) as e:
            c.put_clip("other", [window], model={**identity, "config_sha256": "0" * 64})
        assert e.value.status == 409 and e.value.code == "model_mismatch"
        assert c.put_clip("other", [window], model=identity) == ["other"]
        assert c.delete("other") == 1

    t1 = time.monotonic()
    code, again, err = _bulk(library, server, repo, tmp_path)
    assert code == 0, err[-3000:]
    assert again["skipped"] == 40 and again["indexed"] == again["failed"] == 0, again
    assert again["seconds"]["ray_start"] == 0  # nothing to do: Ray is not even started
    print(f"first run {first_s:.1f} s ({report['seconds']}), second {time.monotonic() - t1:.1f} s")
