"""Start-up on a damaged or lost index, and backup/restore of a data directory, on the real
service: uvicorn subprocesses, the tiny model exported by export/build_engine.py, real
H.264/AAC uploads kept in media/, real SQLite files damaged on disk, kill -9."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pemt.media.encode import make_test_video
from server.core.media import ORPHAN_LIMIT, MediaStore
from server.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[1]


def env_for(repo: Path, data: Path) -> dict[str, str]:
    return {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(data),
        "PEMT_DECODE_WORKERS": "1",
        "PEMT_MAX_CONCURRENT_JOBS": "4",
    }


def tree(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every non-empty file under ``path`` that holds data."""
    skip = {"index.lock", "index.sqlite3-shm", "server.log"}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in skip and p.stat().st_size
    }


def pemt_server(*args: object) -> subprocess.CompletedProcess[str]:
    """``pemt-server`` (server/cli.py) in a subprocess, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def embed(c: httpx.Client, path: Path, item: str) -> httpx.Response:
    with open(path, "rb") as f:
        return c.post("/embed", files={"file": (path.name, f, "video/mp4")}, data={"id": item})


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("recovery-clips")
    return [
        make_test_video(
            d / f"c{i}.mp4", seconds=2, width=64, height=48, pattern=i, tone_hz=300 + 97 * i
        )
        for i in range(4)
    ]


@pytest.fixture(scope="module")
def served(repo: Path, clips: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory a cleanly stopped server left: three clips indexed, their videos kept."""
    data = tmp_path_factory.mktemp("recovery-data") / "data"
    with (
        ServerProcess(env_for(repo, data), log_path=data.parent / "server.log") as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        for i in range(3):
            assert embed(c, clips[i], f"k{i}").status_code == 200
    assert sorted(p.name for p in (data / "media").iterdir()) == ["k0.mp4", "k1.mp4", "k2.mp4"]
    return data


def refused(repo: Path, data: Path, log: Path) -> str:
    """Start a server on ``data``; it must refuse (exit 3) with one message; return the log."""
    srv = ServerProcess(env_for(repo, data), log_path=log)
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=60)
    srv.stop()
    assert srv.proc is not None and srv.proc.returncode == 3
    text = srv.log_tail(20_000)
    assert "refusing to start:" in text and "Traceback" not in text, text
    return text


@pytest.mark.parametrize("damage", ["db_missing", "index_missing", "zeroed", "garbage"])
def test_lost_or_damaged_index_refuses_start_and_keeps_media(
    repo: Path, served: Path, tmp_path: Path, damage: str
) -> None:
    data = tmp_path / "data"
    shutil.copytree(served, data)
    db = data / "index" / "index.sqlite3"
    if damage == "db_missing":
        db.unlink()
    elif damage == "index_missing":
        shutil.rmtree(data / "index")
    elif damage == "zeroed":
        db.write_bytes(bytes(db.stat().st_size))
    else:
        db.write_bytes(np.random.default_rng(0).integers(0, 256, 8192, np.uint8).tobytes())
    before = tree(data)
    log = refused(repo, data, tmp_path / "server.log")
    expected = {
        "db_missing": "index.sqlite3 is missing, but index.commits records 3 acknowledged writes",
        "index_missing": "media holds 3 kept videos",
        "zeroed": "is not a readable SQLite database",
        "garbage": "is not a readable SQLite database",
    }[damage]
    assert expected in log and "pemt-server index restore" in log, log
    after = tree(data)
    assert after == before  # every kept video, and the damaged index, exactly as they were
    assert {p for p in after if p.startswith("media/")} == {
        "media/k0.mp4",
        "media/k1.mp4",
        "media/k2.mp4",
    }
    assert damage != "index_missing" or not (data / "index").exists()


def test_backup_while_writing_then_lost_wal_then_restore(
    repo: Path, served: Path, clips: list[Path], tmp_path: Path
) -> None:
    """Uploads stream in while `pemt-server index backup` runs; the server is killed and its
    WAL cut short. Start-up refuses, naming the loss; after `restore`, every upload
    acknowledged before the backup started is served again, with its video."""
    data = tmp_path / "data"
    shutil.copytree(served, data)
    acked: list[tuple[float, str]] = []
    srv = ServerProcess(env_for(repo, data), log_path=tmp_path / "server1.log").start()

    def stream() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for n in range(400):
                try:
                    r = embed(c, clips[n % 4], f"e{n}")
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append((time.monotonic(), f"e{n}"))

    writer = threading.Thread(target=stream)
    writer.start()
    try:
        deadline = time.monotonic() + 120
        while len(acked) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        res = pemt_server("index", "backup", data, tmp_path / "backup")
        assert res.returncode == 0, res.stderr
        manifest = json.loads(res.stdout)
        n_after = len(acked)
        while len(acked) < n_after + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.kill9()
    finally:
        if srv.alive():
            srv.kill9()
        writer.join(60)
    before_backup = [item for t, item in acked if t < t0]
    assert len(before_backup) >= 5 and len(acked) >= n_after + 5, acked
    assert manifest["index"]["items"] >= 3 + len(before_backup)
    assert manifest["media_missing"] == 0 and manifest["media_files"] == manifest["index"]["items"]

    wal = data / "index" / "index.sqlite3-wal"
    os.truncate(wal, wal.stat().st_size // 2)  # the crash took the WAL's tail with it
    before = tree(data)
    log = refused(repo, data, tmp_path / "server2.log")
    assert "lost acknowledged writes" in log and "are missing" in log, log
    assert tree(data) == before
    check = pemt_server("index", "check", data)
    assert check.returncode == 1 and "lost acknowledged writes" in check.stderr

    res = pemt_server("index", "restore", tmp_path / "backup", data)
    assert res.returncode == 0, res.stderr
    restored = json.loads(res.stdout)
    assert restored["index"]["items"] == manifest["index"]["items"]
    assert restored["previous_index"] and Path(restored["previous_index"]).is_dir()
    assert pemt_server("index", "check", data).returncode == 0

    with (
        ServerProcess(env_for(repo, data), log_path=tmp_path / "server3.log") as srv2,
        httpx.Client(base_url=srv2.url, timeout=60) as c,
    ):
        assert c.get("/info").json()["count"] == manifest["index"]["items"]
        for item in ["k0", "k1", "k2", *before_backup]:
            assert c.get(f"/clips/{item}").status_code == 200, item
            n = int(item[1:])
            source = clips[n if item[0] == "k" else n % 4]
            assert c.get(f"/clips/{item}/media").content == source.read_bytes(), item
        assert embed(c, clips[3], "after-restore").status_code == 200
    # uploads acknowledged after the backup are not in it; their videos were moved aside
    later = {item for _, item in acked} - {
        p.stem for p in (data / "media").iterdir() if p.is_file()
    }
    aside = data / restored["media_aside"] if restored["media_aside"] else None
    assert later and aside is not None
    assert later <= {p.stem for p in aside.iterdir()}


def test_accept_moves_the_lost_clips_videos_aside(served: Path, tmp_path: Path) -> None:
    """After `accept`, videos of clips the index no longer holds are what it takes to upload
    them again: they are moved aside, not left for start-up to delete as orphans."""
    data = tmp_path / "data"
    shutil.copytree(served, data)
    for name in ("lost1.mp4", "lost2.webm"):
        shutil.copy(data / "media" / "k0.mp4", data / "media" / name)
    res = pemt_server("index", "accept", data)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["items"] == 3 and out["media_moved_aside"] == 2
    assert sorted(p.name for p in Path(out["media_aside"]).iterdir()) == ["lost1.mp4", "lost2.webm"]
    assert sorted(p.name for p in (data / "media").iterdir()) == ["k0.mp4", "k1.mp4", "k2.mp4"]
    assert pemt_server("index", "check", data).returncode == 0


@pytest.fixture()
def media_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="pemt.server"):
        yield caplog


def test_start_up_clean_logs_each_removal_and_keeps_a_mass_of_orphans(
    tmp_path: Path, media_log: pytest.LogCaptureFixture
) -> None:
    store = MediaStore(tmp_path / "media")
    for i in range(ORPHAN_LIMIT + 1):
        (store.root / f"clip{i}.mp4").write_bytes(b"video")
    (store.root / ".staged-0123.mp4").write_bytes(b"partial")
    assert store.clean(lambda clip: False) == 1  # only the staged file
    assert len(list(store.root.iterdir())) == ORPHAN_LIMIT + 1
    assert "none was removed" in media_log.text and ".staged-0123.mp4" in media_log.text
    media_log.clear()
    for i in range(3, ORPHAN_LIMIT + 1):
        (store.root / f"clip{i}.mp4").unlink()
    assert store.clean(lambda clip: clip == "clip0") == 2  # a crash's few orphans go
    assert [p.name for p in store.root.iterdir()] == ["clip0.mp4"]
    assert "clip1.mp4" in media_log.text and "clip2.mp4" in media_log.text
