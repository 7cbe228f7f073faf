"""Hostile and careless clients against the real service (uvicorn on 127.0.0.1, the tiny model
exported by export/build_engine.py, real H.264/AAC uploads, real FAISS + SQLite): slow and
stalled bodies, out-of-range numbers and collections, ids with a trailing newline, metadata
keys the service owns, clip ids in every route, GIFs posing as videos."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pemt.media.encode import make_test_video
from server.testing import ServerProcess

KEY = "hardening-key"
H = {"X-API-Key": KEY}
IDLE_S = 2.0  # PEMT_UPLOAD_IDLE_TIMEOUT_S of the module's server


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hardening-media")
    from PIL import Image

    Image.new("RGB", (1, 1), (255, 0, 0)).save(d / "one.gif")
    frames = [Image.new("RGB", (32, 32), (40 * i, 0, 0)) for i in range(5)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=200)
    return {
        "clip": make_test_video(d / "clip.mp4", seconds=2, width=64, height=48),
        # tiny: 4-s windows, stride 2 s -> windows at 0, 2, 4, 6 s
        "long": make_test_video(d / "long.mp4", seconds=10, width=64, height=48, pattern=2),
        "gif": d / "one.gif",
        "anim_gif": d / "anim.gif",
    }


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("hardening-data")
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(data),
        "PEMT_API_KEYS": KEY,
        "PEMT_MAX_CONCURRENT_JOBS": "1",
        "PEMT_DECODE_WORKERS": "1",
        "PEMT_UPLOAD_IDLE_TIMEOUT_S": str(IDLE_S),
        "PEMT_UPLOAD_MIN_RATE": "1024",
        "PEMT_MAX_UPLOAD_BYTES": "2000000",
    }
    with ServerProcess(env, log_path=data / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=H, timeout=60) as c:
        yield c


def embed(
    c: httpx.Client, path: Path, ctype: str = "video/mp4", **fields: object
) -> httpx.Response:
    data = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields.items()}
    with open(path, "rb") as f:
        return c.post("/embed", files={"file": (path.name, f, ctype)}, data=data)


def error(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


# --- slow and stalled bodies -------------------------------------------------------------------


class SlowClient(threading.Thread):
    """A raw HTTP/1.1 client that sends the headers and the start of a body, then dribbles
    one byte every ``every`` seconds (``every=None``: sends nothing more). Records the status
    it gets back and after how long."""

    def __init__(
        self, url: str, path: str, head: bytes, start: bytes, total: int, every: float | None
    ):
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split(":")
        self.addr = (host, int(port))
        self.path, self.head, self.start_bytes = path, head, start
        self.total, self.every = total, every
        self.status: int | None = None
        self.after: float | None = None
        self.stop_at = time.monotonic() + 20

    def run(self) -> None:
        t0 = time.monotonic()
        with socket.create_connection(self.addr) as s:
            s.sendall(
                f"POST {self.path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n".encode()
                + self.head
                + f"Content-Length: {self.total}\r\n\r\n".encode()
            )
            s.sendall(self.start_bytes)
            while time.monotonic() < self.stop_at:
                ready, _, _ = select.select([s], [], [], self.every or 0.2)
                if ready:
                    line = s.recv(4096).split(b"\r\n", 1)[0]
                    if line.startswith(b"HTTP/1.1 "):
                        self.status = int(line.split()[1])
                    self.after = time.monotonic() - t0
                    return
                if self.every is not None:
                    try:
                        s.sendall(b"x")
                    except OSError:
                        return


MULTIPART = b"Content-Type: multipart/form-data; boundary=BOUNDARY\r\n"
FILE_PART = (
    b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
    b"Content-Type: video/mp4\r\n\r\n"
)
JSON = b"Content-Type: application/json\r\n"


def test_slow_and_stalled_bodies_hold_no_slot_and_get_408(
    server: ServerProcess, http: httpx.Client, media: dict[str, Path]
) -> None:
    # one job slot; two uploads at ~3 bytes/s, one that stalls, one slow JSON query
    slow = [
        SlowClient(server.url, "/embed", MULTIPART, FILE_PART, 100_000, every=0.3) for _ in range(2)
    ]
    stalled = SlowClient(server.url, "/search", MULTIPART, FILE_PART, 100_000, every=None)
    slow_json = SlowClient(server.url, "/search", JSON, b'{"vector": [', 10_000, every=0.3)
    clients = [*slow, stalled, slow_json]
    for c in clients:
        c.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    r = embed(http, media["clip"], id="while-slow")
    waited = time.monotonic() - t0
    assert r.status_code == 200, r.text  # not 429: the dribbling uploads hold no slot
    assert waited < IDLE_S + 5, waited
    for c in clients:
        c.join(25)
    got = [(c.status, c.after) for c in clients]
    assert all(status == 408 for status, _ in got), got
    # cut off after about IDLE_S (the grace), not when the client pleased
    assert all(after is not None and after < IDLE_S + 4 for _, after in got), got
    # a client that hangs up halfway is its own error (no 5xx in the metrics, no log noise)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            f"POST /embed HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n".encode()
            + MULTIPART
            + b"Content-Length: 100000\r\n\r\n"
            + FILE_PART
            + bytes(5000)
        )
    time.sleep(0.5)
    r = http.get("/metrics")
    assert 'route="/embed",status="408"' in r.text
    assert 'status="500"' not in r.text
    assert embed(http, media["clip"], id="after-slow").status_code == 200


# --- numbers and collections are bounded ---------------------------------------------------


def test_out_of_range_numbers_and_collections_are_400_not_500(
    http: httpx.Client, media: dict[str, Path]
) -> None:
    assert embed(http, media["clip"], id="bounded", metadata={"n": 1}).status_code == 200
    vec = http.get("/clips/bounded", params={"vectors": "true"}).json()["vectors"]["fused"]
    for params in ({"offset": 2**63}, {"offset": -1}, {"limit": 10**20}, {"offset": "1e3"}):
        r = http.get("/clips", params=params)
        assert error(r) == (400, "invalid_request"), (params, r.text)
    big_filter = {f"k{i}": i for i in range(501)}
    cases = [
        ({"vector": vec, "filter": big_filter}, "invalid_filter"),
        ({"vector": vec, "filter": {"x" * 200: 1}}, "invalid_filter"),
        ({"vector": vec, "k": 10**30}, "invalid_request"),
        ({"vector": [0.5] * 100_000}, "invalid_vector"),
        ({"id": "bounded", "label_key": "x" * 65}, "invalid_request"),
    ]
    for body, code in cases:
        for route in ("/search", "/classify"):
            if "label_key" in body and route == "/search":
                continue
            r = http.post(route, json=body)
            assert error(r) == (400, code), (route, str(body)[:80], r.text[:300])
    r = http.post(  # 1e400 parses as inf
        "/search",
        content=b'{"vector": [' + b", ".join([b"1e400"] * 32) + b"]}",
        headers={"content-type": "application/json"},
    )
    assert error(r) == (400, "invalid_vector"), r.text[:300]
    # the same mistakes in a multipart query: the same status and code
    for fields, code in [
        ({"filter": json.dumps(big_filter)}, "invalid_filter"),
        ({"k": str(10**30)}, "invalid_request"),
        ({"k": "0"}, "invalid_request"),
        ({"modality": "smell"}, "invalid_request"),
        ({"stride": "nan"}, "invalid_stride"),
        ({"strid": "2"}, "invalid_request"),  # a misspelt field is not ignored
    ]:
        with open(media["clip"], "rb") as f:
            r = http.post("/search", files={"file": ("q.mp4", f, "video/mp4")}, data=fields)
        assert error(r) == (400, code), (fields, r.text[:300])
    for body, code in [({"id": "bounded", "k": 0}, "invalid_request")]:
        assert error(http.post("/search", json=body)) == (400, code)
    # JSON nested past any parser's recursion limit, as metadata and as a filter
    deep = "[" * 30_000 + "]" * 30_000
    r = embed(http, media["clip"], id="deep", metadata=deep)
    assert error(r) == (400, "invalid_metadata"), r.text[:300]
    with open(media["clip"], "rb") as f:
        r = http.post("/search", files={"file": ("q.mp4", f, "video/mp4")}, data={"filter": deep})
    assert error(r) == (400, "invalid_filter"), r.text[:300]
    r = http.post(
        "/search",
        content=b'{"vector": ' + deep.encode() + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text[:300]


# --- ids and metadata ------------------------------------------------------------------------


def test_ids_are_matched_whole(http: httpx.Client, media: dict[str, Path]) -> None:
    longest = "a" * 128
    assert embed(http, media["clip"], id=longest).status_code == 200
    assert http.get(f"/clips/{longest}").status_code == 200
    for bad in ("ok\n", longest + "\n", "a" * 129, "ok\r\n", "-x", "has#hash"):
        r = embed(http, media["clip"], id=bad)
        assert error(r) == (400, "invalid_id"), (bad, r.text)
    for bad in ("ok%0A", longest + "%0A", "a" * 129, "%0Aok"):
        for path in (f"/clips/{bad}", f"/clips/{bad}/media", f"/clips/{bad}/thumbnail"):
            assert error(http.get(path)) == (400, "invalid_id"), path
        assert error(http.delete(f"/clips/{bad}")) == (400, "invalid_id"), bad
    assert error(http.post("/search", json={"id": "ok\n"})) == (400, "invalid_id")
    assert error(http.get("/clips", params={"clip_id": "ok\n"})) == (400, "invalid_id")
    assert not [
        c["id"]
        for c in http.get("/clips", params={"limit": 1000}).json()["items"]
        if "\n" in c["id"] or len(c["id"]) > 128
    ]


def test_metadata_keys_the_service_sets_are_refused(
    http: httpx.Client, media: dict[str, Path]
) -> None:
    for key in ("window", "clip_id", "has_audio", "has_video"):
        r = embed(http, media["clip"], id="meta", metadata={key: "mine", "label": "x"})
        assert error(r) == (400, "invalid_metadata"), (key, r.text)
        assert key in r.json()["error"]["message"]
    assert http.get("/clips/meta").status_code == 404  # nothing stored
    r = embed(http, media["clip"], id="meta", metadata={"label": "x", "windowed": True})
    assert r.status_code == 200, r.text
    meta = http.get("/clips/meta").json()["metadata"]
    assert meta == {
        "label": "x",
        "windowed": True,
        "clip_id": "meta",
        "window": 0,
        "has_audio": True,
        "has_video": True,
    }


def test_a_clip_id_works_in_every_route(http: httpx.Client, media: dict[str, Path]) -> None:
    items = embed(http, media["long"], id="lc", metadata={"label": "long"}).json()["items"]
    windows = [f"lc#w{i}" for i in range(4)]
    assert [i["id"] for i in items] == windows
    assert embed(http, media["clip"], id="other", metadata={"label": "short"}).status_code == 200

    got = http.get("/clips/lc", params={"vectors": "true"})
    assert got.status_code == 200, got.text
    clip = got.json()
    assert clip["id"] == clip["clip_id"] == "lc" and clip["windows"] == windows
    assert (clip["start"], clip["end"]) == (0, 10)
    assert clip["metadata"] == {
        "label": "long",
        "clip_id": "lc",
        "has_audio": True,
        "has_video": True,
    }
    assert clip["modalities"] == ["fused", "audio", "visual"]
    mean = np.mean([i["embedding"] for i in items], axis=0)
    np.testing.assert_allclose(clip["vectors"]["fused"], mean / np.linalg.norm(mean), atol=1e-5)
    assert http.get("/clips/lc%23w1").json()["windows"] is None  # an item is itself

    r = http.get("/clips/lc/thumbnail")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert r.content == http.get("/clips/lc%23w0/thumbnail").content
    assert http.get("/clips/lc/media").content == media["long"].read_bytes()
    for route in ("/search", "/classify"):  # the clip's own windows are left out
        r = http.post(route, json={"id": "lc", "k": 10})
        assert r.status_code == 200, r.text
        hits = r.json()["results" if route == "/search" else "neighbors"]
        assert hits and not [h for h in hits if h["id"].startswith("lc")], hits
    assert http.delete("/clips/lc").json() == {"id": "lc", "deleted": 4}
    for path in ("/clips/lc", "/clips/lc/thumbnail", "/clips/lc/media", "/clips/lc%23w0"):
        assert error(http.get(path)) == (404, "not_found"), path


# --- what counts as a video --------------------------------------------------------------------


def test_gif_is_not_a_video(http: httpx.Client, media: dict[str, Path]) -> None:
    for name in ("gif", "anim_gif"):
        for ctype in ("video/mp4", "application/octet-stream"):
            r = embed(http, media[name], ctype=ctype, id=f"g-{name}")
            assert error(r) == (415, "not_media"), (name, ctype, r.text)
            assert "GIF" in r.json()["error"]["message"]
        with open(media[name], "rb") as f:
            r = http.post("/search", files={"file": ("q.mp4", f, "video/mp4")})
        assert error(r) == (415, "not_media")
    assert http.get("/clips/g-gif").status_code == 404
