"""Stateless API replicas: two uvicorn processes on two ports, one milvus-lite server, one
model repository, one shared media folder. A clip embedded through one is found (search,
GET, thumbnail, source video) through the other; kill -9 of one replica in the middle of a
stream of uploads loses no acknowledged write, and the other keeps answering meanwhile."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from pemt.media.encode import make_test_video
from server.testing import MilvusLiteServer, ServerProcess, free_port

pytestmark = pytest.mark.slow


def test_two_replicas_share_one_index_and_survive_a_kill_9(
    repo: Path, milvus_server: MilvusLiteServer, tmp_path: Path
) -> None:
    clips = [
        make_test_video(tmp_path / f"c{i}.mp4", seconds=2, width=64, height=48, pattern=i,
                        tone_hz=300 + 97 * i)
        for i in range(6)
    ]  # fmt: skip
    shared = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_INDEX_BACKEND": "milvus",
        "PEMT_MILVUS_URI": milvus_server.uri,
        "PEMT_MILVUS_COLLECTION": f"replicas_{uuid.uuid4().hex[:8]}",
        "PEMT_MEDIA_DIR": str(tmp_path / "shared-media"),
        "PEMT_MAX_CONCURRENT_JOBS": "4",
    }
    a = ServerProcess({**shared, "PEMT_DATA_DIR": str(tmp_path / "a")}, log_path=tmp_path / "a.log")
    b = ServerProcess({**shared, "PEMT_DATA_DIR": str(tmp_path / "b")}, log_path=tmp_path / "b.log")
    a.start()
    b.start()
    try:
        with (
            httpx.Client(base_url=a.url, timeout=30) as ca,
            httpx.Client(base_url=b.url, timeout=30) as cb,
        ):
            # written through A, read through B
            r = ca.post("/embed", files={"file": ("c.mp4", clips[0].read_bytes())},
                        data={"id": "first", "metadata": '{"label": "x"}'})  # fmt: skip
            assert r.status_code == 200, r.text
            vec = r.json()["items"][0]["embedding"]
            hits = cb.post("/search", json={"vector": vec, "k": 1}).json()["results"]
            assert hits[0]["id"] == "first" and hits[0]["score"] > 0.9999
            assert cb.get("/clips/first").json()["metadata"]["label"] == "x"
            assert cb.get("/clips/first/thumbnail").content[:2] == b"\xff\xd8"
            assert cb.get("/clips/first/media").content == clips[0].read_bytes()

            # a stream of uploads to A; A is killed in the middle of it
            acked: list[str] = []
            failed: list[str] = []

            def stream() -> None:
                with httpx.Client(base_url=a.url, timeout=30) as c:
                    for n in range(100):
                        path = clips[n % len(clips)]
                        try:
                            r = c.post("/embed", files={"file": (path.name, path.read_bytes())},
                                       data={"id": f"k{n}", "metadata": f'{{"n": {n}}}'})  # fmt: skip
                        except httpx.HTTPError:
                            failed.append(f"k{n}")
                            return
                        if r.status_code == 200:
                            acked.append(f"k{n}")

            answers: list[int] = []  # B's status codes while A works and dies

            def poll_b() -> None:
                with httpx.Client(base_url=b.url, timeout=30) as c:
                    while writer.is_alive():
                        answers.append(c.post("/search", json={"vector": vec, "k": 3}).status_code)
                        time.sleep(0.05)

            writer = threading.Thread(target=stream)
            poller = threading.Thread(target=poll_b)
            writer.start()
            poller.start()
            deadline = time.monotonic() + 60
            while len(acked) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.05)  # land inside a request
            a.kill9()
            writer.join(30)
            poller.join(30)
            assert len(acked) >= 5 and failed, (acked, failed)
            assert answers and set(answers) == {200}, answers
            # B answered all along and still does: every acknowledged write is there
            assert cb.get("/readyz").status_code == 200
            for item in acked:
                got = cb.get(f"/clips/{item}", params={"vectors": "true"})
                assert got.status_code == 200, (item, got.text)
                n = int(item[1:])
                body = {"vector": got.json()["vectors"]["fused"], "k": 1, "filter": {"n": n}}
                assert [h["id"] for h in cb.post("/search", json=body).json()["results"]] == [item]
            r = cb.post("/embed", files={"file": ("c.mp4", clips[1].read_bytes())},
                        data={"id": "after"})  # fmt: skip
            assert r.status_code == 200
            assert cb.get("/info").json()["count"] >= len(acked) + 2
    finally:
        a.stop()
        b.stop()


def test_milvus_down_is_a_clear_refusal_then_503_then_recovery(repo: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(tmp_path / "data"),
        "PEMT_INDEX_BACKEND": "milvus",
        "PEMT_MILVUS_URI": f"http://127.0.0.1:{port}",
        "PEMT_MILVUS_TIMEOUT_S": "3",
    }
    srv = ServerProcess(env, log_path=tmp_path / "refused.log")
    with pytest.raises(RuntimeError, match="exited with 3") as err:
        srv.start()
    srv.stop()
    assert f"cannot reach Milvus at http://127.0.0.1:{port}" in str(err.value)
    assert "PEMT_MILVUS_URI" in str(err.value) and "Traceback" not in str(err.value)

    milvus = MilvusLiteServer(tmp_path / "milvus", port=port).start()
    srv = ServerProcess(env, log_path=tmp_path / "api.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            vec = [1.0] + [0.0] * 31
            assert c.post("/search", json={"vector": vec, "k": 1}).status_code == 200
            milvus.stop()
            r = c.post("/search", json={"vector": vec, "k": 1})
            assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
            assert r.json()["error"]["code"] == "index_unavailable"
            assert "Milvus at" in r.json()["error"]["message"]
            assert c.get("/readyz").status_code == 503
            milvus = MilvusLiteServer(tmp_path / "milvus", port=port).start()
            deadline = time.monotonic() + 30
            while c.post("/search", json={"vector": vec, "k": 1}).status_code != 200:
                assert time.monotonic() < deadline, "no recovery after Milvus came back"
                time.sleep(0.5)
    finally:
        srv.stop()
        milvus.stop()
