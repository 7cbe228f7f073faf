"""Kept source videos (GET /clips/{id}/media, HTTP ranges) and whole-clip exclusion of id
queries, on the real service: uvicorn on 127.0.0.1, the tiny model exported by
export/build_engine.py, real H.264/AAC and VP9/Opus uploads, real FAISS + SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pemt.media.encode import make_test_video
from server.testing import ServerProcess

KEY = "media-key"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media-src")
    files = {
        "clip": make_test_video(d / "clip.mp4", seconds=3, width=96, height=64),
        # tiny: 4-s windows, stride 2 s -> windows at 0, 2, 4, 6 s
        "long": make_test_video(d / "long.mp4", seconds=10, width=64, height=48, pattern=2),
        "webm": make_test_video(
            d / "clip.webm", seconds=2, width=64, height=48, video_codec="vp9", audio_codec="opus"
        ),
    }
    for i, (pattern, tone) in enumerate([(0, 440), (5, 2500), (0, 490), (5, 2550)]):
        files[f"lab{i}"] = make_test_video(
            d / f"lab{i}.mp4", seconds=2, width=64, height=48, pattern=pattern, tone_hz=tone
        )
    return files


def env_for(repo: Path, data: Path, **extra: object) -> dict[str, str]:
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(data),
        "PEMT_DECODE_WORKERS": "1",
        "PEMT_DECODE_TIMEOUT_S": "30",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media-data")


@pytest.fixture(scope="module")
def server(repo: Path, data_dir: Path) -> Iterator[ServerProcess]:
    env = env_for(repo, data_dir, PEMT_API_KEYS=KEY)
    with ServerProcess(env, log_path=data_dir / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=H, timeout=60) as c:
        yield c


def embed(
    c: httpx.Client, path: Path, name: str | None = None, ctype: str = "video/mp4", **fields: object
) -> dict:
    data = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields.items()}
    with open(path, "rb") as f:
        r = c.post("/embed", files={"file": (name or path.name, f, ctype)}, data=data)
    assert r.status_code == 200, r.text
    return r.json()


def test_media_is_the_exact_upload_with_ranges(
    http: httpx.Client, server: ServerProcess, media: dict[str, Path], data_dir: Path
) -> None:
    embed(http, media["clip"], id="m1")
    data = media["clip"].read_bytes()
    size = len(data)
    r = http.get("/clips/m1/media")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "video/mp4" and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(size)
    assert r.headers["x-content-type-options"] == "nosniff"

    r = http.get("/clips/m1/media", headers={"Range": "bytes=100-1099"})
    assert r.status_code == 206 and r.content == data[100:1100]
    assert r.headers["content-range"] == f"bytes 100-1099/{size}"
    r = http.get("/clips/m1/media", headers={"Range": "bytes=-64"})  # the last 64 bytes
    assert r.status_code == 206 and r.content == data[-64:]
    r = http.get("/clips/m1/media", headers={"Range": f"bytes={size - 10}-"})
    assert r.status_code == 206 and r.content == data[-10:]
    for bad in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=abc", "bytes=9-3"):
        r = http.get("/clips/m1/media", headers={"Range": bad})
        assert r.status_code == 416, (bad, r.status_code, r.text)
        assert r.json()["error"]["code"] == "range_not_satisfiable"
        assert r.headers["content-range"] == f"bytes */{size}"

    # the same API-key rule as every /clips route
    assert httpx.get(server.url + "/clips/m1/media").status_code == 401
    r = httpx.get(server.url + "/clips/m1/media", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = http.get("/clips/nope/media")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    # the file on disk: the id made safe, a whitelisted suffix (never the uploaded name's own)
    embed(http, media["clip"], name="../../x.php", id="cam:7")
    kept = sorted(p.name for p in (data_dir / "media").iterdir())
    assert kept == ["cam~3a7.mp4", "m1.mp4"], kept
    assert http.get("/clips/cam:7/media").content == data
    assert list((data_dir / "uploads").iterdir()) == []  # moved, not copied

    # re-embedding an id replaces its file (another container: another suffix and type)
    embed(http, media["webm"], name="clip", ctype="application/octet-stream", id="m1")
    r = http.get("/clips/m1/media")
    assert r.content == media["webm"].read_bytes() and r.headers["content-type"] == "video/webm"
    assert sorted(p.name for p in (data_dir / "media").iterdir()) == ["cam~3a7.mp4", "m1.webm"]
    # a query upload and store=false keep nothing
    embed(http, media["clip"], id="m2", store="false")
    assert http.get("/clips/m2/media").status_code == 404
    assert http.delete("/clips/cam:7").status_code == 200
    assert sorted(p.name for p in (data_dir / "media").iterdir()) == ["m1.webm"]


def test_windows_share_the_clip_file_and_id_queries_leave_out_the_clip(
    http: httpx.Client, media: dict[str, Path], data_dir: Path
) -> None:
    for i in range(4):
        embed(http, media[f"lab{i}"], id=f"lab{i}", metadata={"label": "ab"[i % 2]})
    items = embed(http, media["long"], id="lc", metadata={"label": "long"})["items"]
    assert [i["id"] for i in items] == [f"lc#w{i}" for i in range(4)]
    data = media["long"].read_bytes()
    for item_id in ("lc", "lc#w0", "lc#w2"):
        r = http.get(f"/clips/{item_id.replace('#', '%23')}/media")
        assert r.status_code == 200 and r.content == data, item_id

    total = http.get("/info").json()["count"]
    for modality in ("fused", "visual"):
        r = http.post("/search", json={"id": "lc#w1", "k": 50, "modality": modality})
        ids = [h["id"] for h in r.json()["results"]]
        assert ids and not [i for i in ids if i.startswith("lc")], ids
        assert len(ids) == total - 4  # every other item still comes back
    r = http.post("/search", json={"id": "lc#w2", "k": 2})
    assert len(r.json()["results"]) == 2  # over-fetched past the clip's own windows
    # a vector or an upload query is not an id: the clip's windows are found
    r = http.post("/search", json={"vector": items[1]["embedding"], "k": 1})
    assert r.json()["results"][0]["id"] == "lc#w1"
    with open(media["long"], "rb") as f:
        r = http.post("/search", files={"file": ("q.mp4", f, "video/mp4")}, data={"k": "4"})
    assert {h["id"] for h in r.json()["results"]} == {f"lc#w{i}" for i in range(4)}

    # classify: the clip's own labeled windows do not vote
    r = http.post("/classify", json={"id": "lc#w0", "k": 3})
    body = r.json()
    assert r.status_code == 200 and body["label"] in {"a", "b"}, body
    assert "long" not in body["scores"] and len(body["neighbors"]) == 3
    assert not [n for n in body["neighbors"] if n["id"].startswith("lc")]
    r = http.post("/classify", json={"vector": items[0]["embedding"], "k": 1})
    assert r.json()["label"] == "long"

    # deleting one window keeps the file; deleting the clip removes it
    assert http.delete("/clips/lc%23w3").json() == {"id": "lc#w3", "deleted": 1}
    assert http.get("/clips/lc/media").status_code == 200
    assert http.delete("/clips/lc").json() == {"id": "lc", "deleted": 3}
    assert not (data_dir / "media" / "lc.mp4").exists()
    assert http.get("/clips/lc%23w0/media").status_code == 404


def test_orphans_removed_at_start_and_keep_media_off(
    repo: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    import numpy as np

    from server.index import VectorIndex

    # The state a kill -9 can leave, written with the real index: a clip with its file
    # ("stays"); rows deleted but not yet the file ("gone"); a file staged but not committed;
    # a file for an id whose rows never committed ("never"). And a file the server never writes.
    data = tmp_path / "data"
    kept = data / "media"
    kept.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with VectorIndex(data / "index", dim=32) as idx:
        for clip in ("stays", "gone"):
            idx.upsert(clip, {"fused": rng.standard_normal(32)}, clip_id=clip)
        assert idx.delete("gone")
    clip_bytes = media["clip"].read_bytes()
    for name in ("stays.mp4", "gone.webm", ".staged-0123abcd.mp4", "never.mp4"):
        (kept / name).write_bytes(clip_bytes)
    (kept / "notes.txt").write_text("not ours")

    env = env_for(repo, data, PEMT_KEEP_MEDIA="false")
    srv = ServerProcess(env, log_path=tmp_path / "server.log")
    with srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert sorted(p.name for p in kept.iterdir()) == ["notes.txt", "stays.mp4"]
        r = c.get("/clips/stays/media")  # kept earlier, but the server keeps none now
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert "PEMT_KEEP_MEDIA" in r.json()["error"]["message"]
        embed(c, media["clip"], id="new")
        assert c.get("/clips/new").status_code == 200
        # re-embedding an id while nothing is kept drops its old (now stale) file
        embed(c, media["webm"], id="stays")
        assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
