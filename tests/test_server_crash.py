"""kill -9 the server during a stream of /embed calls: after a restart on the same data
directory, every id the server acknowledged (HTTP 200) is present and searchable."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from pemt.media.encode import make_test_video
from server.testing import ServerProcess


def test_acknowledged_ids_survive_kill_9(repo: Path, tmp_path: Path) -> None:
    clips = [
        make_test_video(
            tmp_path / f"c{i}.mp4", seconds=2, width=64, height=48, pattern=i, tone_hz=300 + 97 * i
        )
        for i in range(12)
    ]
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(tmp_path / "data"),
        "PEMT_MAX_CONCURRENT_JOBS": "4",
    }
    acked: list[str] = []
    failed: list[str] = []
    srv = ServerProcess(env, log_path=tmp_path / "server.log").start()

    def stream() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for n in range(200):
                path = clips[n % len(clips)]
                item = f"k{n}"
                try:
                    r = c.post(
                        "/embed",
                        files={"file": (path.name, path.read_bytes(), "video/mp4")},
                        data={"id": item, "metadata": f'{{"n": {n}}}'},
                    )
                except httpx.HTTPError:
                    failed.append(item)
                    return
                if r.status_code == 200:
                    acked.append(item)

    writers = [threading.Thread(target=stream)]
    writers[0].start()
    deadline = time.monotonic() + 60
    while len(acked) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.07)  # land inside a request
    srv.kill9()
    writers[0].join(30)
    assert len(acked) >= 6 and failed, (acked, failed)

    srv = ServerProcess(env, log_path=tmp_path / "server2.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for item in acked:
                got = c.get(f"/clips/{item}", params={"vectors": "true"})
                assert got.status_code == 200, (item, got.text)
                vec = got.json()["vectors"]["fused"]
                hits = c.post("/search", json={"vector": vec, "k": 1}).json()["results"]
                assert hits[0]["score"] > 0.9999
                # identical uploads embed identically; the top hit is this item or its twin
                twins = {f"k{m}" for m in range(int(item[1:]) % 12, 200, 12)}
                assert hits[0]["id"] in twins, (item, hits)
                n = int(item[1:])
                hits = c.post("/search", json={"vector": vec, "k": 1, "filter": {"n": n}}).json()
                assert [h["id"] for h in hits["results"]] == [item]
            assert c.get("/info").json()["count"] >= len(acked)
            # and the restarted server keeps working
            r = c.post(
                "/embed",
                files={"file": ("c.mp4", clips[0].read_bytes(), "video/mp4")},
                data={"id": "after"},
            )
            assert r.status_code == 200
    finally:
        srv.stop()
