"""A real full disk under the real service: the data directory is a small tmpfs (needs root and
permission to mount; skipped otherwise), filled with a ballast file to an exact number of free
bytes. Three ways the disk can run out: before an upload is read, while it is written, and
when the index is written after it. Each is 507 ``storage_full`` with Retry-After, ``/readyz``
says why while the directory is under PEMT_MIN_FREE_BYTES, and every acknowledged clip stays
intact, also across a restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pemt.media.encode import make_test_video
from server.testing import ServerProcess

MIN_FREE = 16 * 1024
PAGE = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def leave_free(disk: Path, target: int) -> None:
    """Grow (or shrink) disk/ballast.bin until ``target`` bytes (a page multiple) are free."""
    ballast = disk / "ballast.bin"
    size = ballast.stat().st_size if ballast.exists() else 0
    size += shutil.disk_usage(disk).free - target
    with open(ballast, "ab") as f:
        f.truncate(0)
        f.write(bytes(max(size, 0)))
    assert shutil.disk_usage(disk).free == target, (shutil.disk_usage(disk).free, target)


def multipart(path: Path, **fields: str) -> tuple[bytes, str]:
    boundary = "diskfullboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"'
        "\r\nContent-Type: video/mp4\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(c: httpx.Client, path: Path, *, chunked: bool, **fields: str) -> httpx.Response:
    """POST /embed; ``chunked``: no Content-Length, so the server cannot refuse up front."""
    body, ctype = multipart(path, **fields)
    content: bytes | Iterator[bytes] = iter([body]) if chunked else body
    return c.post("/embed", content=content, headers={"content-type": ctype})


def check_full(r: httpx.Response, says: str) -> None:
    assert r.status_code == 507, r.text
    err = r.json()["error"]
    assert err["code"] == "storage_full" and says in err["message"], r.text
    assert int(r.headers["retry-after"]) > 0


def test_full_disk_is_507_and_readyz_and_keeps_acknowledged_clips(
    small_disk: Path, repo: Path, tmp_path: Path
) -> None:
    clips = [
        make_test_video(tmp_path / f"c{i}.mp4", seconds=2, width=64, height=48, pattern=i)
        for i in range(4)
    ]
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(small_disk / "data"),
        "PEMT_MIN_FREE_BYTES": str(MIN_FREE),
        "PEMT_DECODE_WORKERS": "1",
    }
    srv = ServerProcess(env, log_path=tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            acked = {}
            for i in range(3):
                r = upload(c, clips[i], chunked=False, id=f"ok{i}")
                assert r.status_code == 200, r.text
                acked[f"ok{i}"] = r.json()["items"][0]["embedding"]
            size = clips[3].stat().st_size
            stored = sorted(p.name for p in (small_disk / "data" / "media").iterdir())

            # 1. under the reserve: not ready, and an upload is refused before it is read
            leave_free(small_disk, MIN_FREE - PAGE)
            r = c.get("/readyz")
            assert r.status_code == 503 and "PEMT_MIN_FREE_BYTES" in r.text, r.text
            check_full(upload(c, clips[3], chunked=False, id="full1"), "in reserve")

            # 2. the disk fills while the upload is written (no Content-Length to refuse by)
            leave_free(small_disk, MIN_FREE + PAGE)
            assert c.get("/readyz").status_code == 200
            check_full(upload(c, clips[3], chunked=True, id="full2"), "No space left")

            # 3. the upload fits, the index write after it does not
            leave_free(small_disk, (size + PAGE - 1) // PAGE * PAGE + 2 * PAGE)
            check_full(upload(c, clips[3], chunked=True, id="full3"), "index could not be written")

            # nothing of the refused uploads is left; the acknowledged clips are intact
            assert sorted(p.name for p in (small_disk / "data" / "media").iterdir()) == stored
            assert list((small_disk / "data" / "uploads").iterdir()) == []
            for i in (1, 2, 3):
                assert c.get(f"/clips/full{i}").status_code == 404
            with contextlib.suppress(FileNotFoundError):
                (small_disk / "ballast.bin").unlink()
            assert c.get("/readyz").status_code == 200
            r = upload(c, clips[3], chunked=True, id="after")
            assert r.status_code == 200, r.text
    finally:
        srv.stop()

    srv = ServerProcess(env, log_path=tmp_path / "server2.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            assert c.get("/info").json()["count"] == 4
            for item, vec in acked.items():
                hits = c.post("/search", json={"vector": vec, "k": 1}).json()["results"]
                assert hits[0]["id"] == item and hits[0]["score"] > 0.9999, (item, hits)
                assert c.get(f"/clips/{item}/media").status_code == 200
    finally:
        srv.stop()
