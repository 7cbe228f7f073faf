"""The real service end to end: uvicorn on 127.0.0.1, the tiny model exported by
export/build_engine.py, real H.264/AAC uploads, real HTTP; every test on the server runs twice,
on the FAISS + SQLite index and on the Milvus index (a real milvus-lite server), with the same
assertions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pemt.media.encode import make_test_video
from server.testing import ServerProcess

KEY = "test-key-1"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    files = {
        "clip": make_test_video(d / "clip.mp4", seconds=3, width=96, height=64),
        "long": make_test_video(d / "long.mp4", seconds=10, width=64, height=48, pattern=2),
        "silent": make_test_video(
            d / "silent.mp4", seconds=2, width=64, height=48, audio_codec=None
        ),
        "too_long": make_test_video(
            d / "too_long.mp4", seconds=25, width=32, height=32, fps=2, sample_rate=8000, channels=1
        ),
        "webm": make_test_video(
            d / "clip.webm", seconds=2, width=64, height=48, video_codec="vp9", audio_codec="opus"
        ),
    }
    # one length for all: an untrained model's start tokens see more of the mask pattern than
    # of the content, so the classes differ in content only
    for label, (pattern, tone) in {"red": (0, 440), "blue": (5, 2500)}.items():
        for i in range(3):
            files[f"{label}{i}"] = make_test_video(
                d / f"{label}{i}.mp4",
                seconds=3,
                width=96,
                height=64,
                pattern=pattern,
                tone_hz=tone + 50 * i,
            )
    return files


def server_env(repo: Path, data: Path, **extra: object) -> dict[str, str]:
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(data),
        "PEMT_API_KEYS": f"{KEY},other-key",
        "PEMT_MAX_UPLOAD_BYTES": "400000",
        "PEMT_MAX_DURATION_S": "20",
        "PEMT_REQUIRE_AUDIO": "true",
        "PEMT_DECODE_TIMEOUT_S": "30",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def server(
    repo: Path, tmp_path_factory: pytest.TempPathFactory, index_env: dict[str, str]
) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("data")
    env = server_env(repo, data, **index_env)
    srv = ServerProcess(env, log_path=data / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=H, timeout=60) as c:
        yield c


def embed(http: httpx.Client, path: Path, **fields: object) -> httpx.Response:
    data = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields.items()}
    with open(path, "rb") as f:
        return http.post("/embed", files={"file": (path.name, f, "video/mp4")}, data=data)


def test_embed_then_search_finds_itself_first(http: httpx.Client, media: dict[str, Path]) -> None:
    r = embed(http, media["clip"], id="clip1", metadata={"kind": "pattern", "source": "test"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["id"] for i in body["items"]] == ["clip1"]
    item = body["items"][0]
    assert len(item["embedding"]) == 32 and item["has_audio"] and item["has_video"]
    assert abs(np.linalg.norm(item["embedding"]) - 1) < 1e-4
    assert item["start"] == 0 and 2.9 < item["end"] < 3.2
    assert set(body["timings_ms"]) >= {"upload", "decode", "model", "index", "total"}

    with open(media["clip"], "rb") as f:
        r = http.post("/search", files={"file": ("q.mp4", f, "video/mp4")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["id"] == "clip1" and top["score"] > 0.9999
    assert top["metadata"]["source"] == "test" and top["thumbnail_url"] == "/clips/clip1/thumbnail"

    r = http.post("/search", json={"vector": item["embedding"], "k": 1})
    assert r.json()["results"][0]["id"] == "clip1"
    r = http.post(
        "/search", json={"vector": item["embedding"], "k": 5, "filter": {"source": "nope"}}
    )
    assert r.json()["results"] == []

    thumb = http.get("/clips/clip1/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"


def test_long_video_gives_one_item_per_window(http: httpx.Client, media: dict[str, Path]) -> None:
    # tiny: 4-s windows, stride 2 s -> a 10-s clip gives windows at 0, 2, 4, 6 s
    r = embed(http, media["long"], id="long", metadata={"kind": "long"})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["id"] for i in items] == [f"long#w{i}" for i in range(4)]
    assert [(i["start"], i["end"]) for i in items] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    got = http.get("/clips/long%23w2").json()
    assert got["clip_id"] == "long" and got["metadata"]["clip_id"] == "long"
    assert got["modalities"] == ["fused", "audio", "visual"]
    # a stored window as the query: its whole clip is left out, other clips come back
    r = http.post("/search", json={"id": "long#w1", "k": 3, "modality": "visual"})
    assert r.status_code == 200, r.text
    ids = [h["id"] for h in r.json()["results"]]
    assert not [i for i in ids if i.startswith("long")], ids
    # stride and window are honoured, and re-embedding an id replaces its windows
    r = embed(http, media["long"], id="long", stride=4, window=4)
    assert [i["id"] for i in r.json()["items"]] == ["long#w0", "long#w1", "long#w2"]
    # a shorter window than the model's: 2 s of content, the rest masked
    r = embed(http, media["long"], id="short", window=2, stride=2, store="false")
    assert [(i["start"], i["end"]) for i in r.json()["items"]] == [
        (t, t + 2) for t in range(0, 10, 2)
    ]
    page = http.get("/clips", params={"clip_id": "long"}).json()
    assert [c["id"] for c in page["items"]] == ["long#w0", "long#w1", "long#w2"]
    assert http.delete("/clips/long").json() == {"id": "long", "deleted": 3}
    assert http.get("/clips/long%23w0").status_code == 404
    assert http.delete("/clips/long").status_code == 404


def test_classify_by_knn_vote(http: httpx.Client, media: dict[str, Path]) -> None:
    for label in ("red", "blue"):
        for i in range(2):
            r = embed(http, media[f"{label}{i}"], id=f"{label}{i}", metadata={"label": label})
            assert r.status_code == 200, r.text
    for label in ("red", "blue"):
        with open(media[f"{label}2"], "rb") as f:
            r = http.post("/classify", files={"file": ("q.mp4", f, "video/mp4")}, data={"k": "2"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == label, body
        assert abs(sum(body["scores"].values()) - 1) < 1e-6
        assert {n["metadata"]["label"] for n in body["neighbors"]} == {label}
    r = http.post("/classify", json={"id": "red0", "k": 1})
    assert r.json()["label"] == "red" and r.json()["neighbors"][0]["id"] == "red1"


def test_best_modality_finds_a_copy_whose_picture_was_replaced(
    http: httpx.Client, tmp_path: Path
) -> None:
    """``modality=best``: a copy of A with A's sound under another clip's greyed picture.
    Each stored item's score is the highest of its fused, audio and visual scores, exactly
    the numbers the three single-modality searches give on the same server; A comes first,
    matched on sound. Upload and stored-id queries alike; a raw vector cannot use best and
    /classify does not take it."""
    from pemt import edits
    from pemt.eval.clips import Clip, decode_clip, write_clip

    a = make_test_video(tmp_path / "a.mp4", seconds=2, width=64, height=48, tone_hz=700)
    b = make_test_video(tmp_path / "b.mp4", seconds=2, width=64, height=48, pattern=4, tone_hz=1900)
    other = make_test_video(tmp_path / "c.mp4", seconds=2, width=64, height=48, pattern=6)
    sound, picture = decode_clip(a), decode_clip(other)
    n = min(len(sound.frames), len(picture.frames))
    copy = Clip(edits.grayscale(picture.frames[:n]), picture.fps, sound.audio, sound.sample_rate)
    query = write_clip(copy, tmp_path / "copy.mp4")
    for name, path, group in (("bestA", a, "src"), ("bestB", b, "src"), ("bestQ", query, "q")):
        r = embed(http, path, id=name, metadata={"best_test": group})
        assert r.status_code == 200, r.text
    only = {"best_test": "src"}

    def search_upload(modality: str) -> dict[str, object]:
        with open(query, "rb") as f:
            r = http.post(
                "/search",
                files={"file": ("copy.mp4", f, "video/mp4")},
                data={"k": "5", "modality": modality, "filter": json.dumps(only)},
            )
        assert r.status_code == 200, r.text
        return r.json()

    def search_id(modality: str) -> dict[str, object]:
        r = http.post("/search", json={"id": "bestQ", "k": 5, "modality": modality, "filter": only})
        assert r.status_code == 200, r.text
        return r.json()

    for ask in (search_upload, search_id):
        single = {
            m: {h["id"]: h["score"] for h in ask(m)["results"]}
            for m in ("fused", "audio", "visual")
        }
        for hits in single.values():
            assert set(hits) == {"bestA", "bestB"}, single
        best = ask("best")
        assert isinstance(best["timings_ms"], dict) and "search" in best["timings_ms"]
        results = best["results"]
        assert isinstance(results, list)
        assert [h["id"] for h in results] == ["bestA", "bestB"], (ask.__name__, results, single)
        for h in results:
            want = max(single, key=lambda m: single[m][h["id"]])
            assert h["score"] == pytest.approx(single[want][h["id"]], abs=1e-5), (h, single)
            assert h["modality"] == want, (h, single)
        assert results[0]["modality"] == "audio", single  # the untouched stream
        assert all(h["modality"] is None for h in ask("fused")["results"])

    # one vector belongs to one space: best needs an upload or an id
    vec = http.get("/clips/bestQ", params={"vectors": "true"}).json()["vectors"]["fused"]
    r = http.post("/search", json={"vector": vec, "k": 2, "modality": "best"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and "upload" in err["message"], err
    # /classify votes in one space: best is refused as any unknown modality, in both forms
    r = http.post("/classify", json={"id": "bestQ", "modality": "best"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    with open(query, "rb") as f:
        r = http.post(
            "/classify",
            files={"file": ("copy.mp4", f, "video/mp4")},
            data={"modality": "best"},
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    assert http.delete("/clips/bestQ").status_code == 200


def test_paging_get_delete(http: httpx.Client, media: dict[str, Path]) -> None:
    for i in range(5):
        assert embed(http, media["webm"], id=f"page{i}", store="true").status_code == 200
    seen: list[str] = []
    offset = 0
    while True:
        page = http.get("/clips", params={"offset": offset, "limit": 2}).json()
        seen += [c["id"] for c in page["items"]]
        offset += len(page["items"])
        if not page["items"]:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == page["total"]
    assert {f"page{i}" for i in range(5)} <= set(seen)
    got = http.get("/clips/page3", params={"vectors": "true"}).json()
    assert len(got["vectors"]["fused"]) == 32
    assert http.delete("/clips/page3").json()["deleted"] == 1
    assert http.get("/clips/page3").status_code == 404
    assert http.get("/clips", params={"limit": 0}).status_code == 400
    r = embed(http, media["webm"], store="false")
    assert r.status_code == 200 and r.json()["stored"] is False
    assert http.get(f"/clips/{r.json()['items'][0]['id']}").status_code == 404


def test_listing_by_cursor(server: ServerProcess, http: httpx.Client) -> None:
    """GET /clips?after= walks every id once in byte order, by clip too, with the SDK's
    iter_clips (sync and async) on both backends; next is null on the last page."""
    from clients.sdk import AsyncPemtClient, PemtClient

    identity = http.get("/info").json()["model"]["identity"]

    def window(i: int) -> dict[str, object]:
        return {"window": i, "start": 2.0 * i, "end": 2.0 * i + 2, "has_audio": False,
                "has_video": True, "vectors": {"fused": [1.0] * 32, "visual": [1.0] * 32}}  # fmt: skip

    odd = ["a:1", "Z", "a_1", "A-1", "a", "a.1"]  # differ in case and punctuation only
    clip = [f"cursor#w{i}" for i in range(5)]
    with PemtClient(server.url, api_key=KEY) as c:
        for cid in odd:
            assert c.put_clip(cid, [window(0)], model=identity) == [cid]
        assert c.put_clip("cursor", [window(i) for i in range(5)], model=identity) == clip
        one = c.list(limit=1000)
        every = [x.id for x in one.items]
        assert every == sorted(every) and len(set(every)) == len(every) == one.total
        assert one.next is None and set(odd) | set(clip) <= set(every)
        assert [i for i in every if i in odd] == ["A-1", "Z", "a", "a.1", "a:1", "a_1"]
        for size in (1, 2, 5):
            assert [x.id for x in c.iter_clips(page_size=size)] == every, size
            assert [x.id for x in c.iter_clips(clip_id="cursor", page_size=size)] == clip
        page = c.list(limit=2)
        assert [x.id for x in page.items] == every[:2] and page.next == every[1]
        page = c.list(limit=3, after=page.next)
        assert [x.id for x in page.items] == every[2:5] and page.next == every[4]
        last = c.list(limit=2, after=every[-3])
        assert [x.id for x in last.items] == every[-2:] and last.next is None
        page = c.list(limit=2, clip_id="cursor", after="cursor#w2")
        assert [x.id for x in page.items] == clip[3:] and page.next is None and page.total == 5

        async def walk() -> list[str]:
            async with AsyncPemtClient(server.url, api_key=KEY) as a:
                return [x.id async for x in a.iter_clips(page_size=3)]

        assert asyncio.run(walk()) == every
        for cid in [*odd, "cursor"]:
            assert c.delete(cid) >= 1
    for params in ({"after": "a", "offset": 1}, {"after": "no spaces"}, {"after": ""}):
        r = http.get("/clips", params=params)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    assert "not both" in http.get("/clips", params={"after": "a", "offset": 1}).text


def test_generated_id_and_info_metrics_health(
    http: httpx.Client, server: ServerProcess, media: dict[str, Path]
) -> None:
    r = embed(http, media["clip"])
    gen = r.json()["items"][0]["id"]
    assert len(gen) == 32 and http.get(f"/clips/{gen}").status_code == 200
    info = http.get("/info").json()
    assert info["count"] >= 1 and info["backend"]["backend"] == "onnx"
    assert info["model"]["name"] == "tiny" and info["config"]["api_keys"] == 2
    assert KEY not in json.dumps(info)
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").status_code == 200
    text = httpx.get(server.url + "/metrics").text
    assert 'pemt_request_seconds_count{method="POST",route="/embed",status="200"}' in text
    assert 'pemt_stage_seconds_count{stage="decode"}' in text and "pemt_jobs_in_flight" in text
    assert "pemt_index_items" in text
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/embed", "/search", "/classify", "/clips", "/clips/{id}", "/metrics"} <= set(
        spec["paths"]
    )


def test_api_key(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/clips")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.get(server.url + "/clips", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and "invalid API key" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/clips", headers={"X-API-Key": "other-key"}).status_code == 200
    with open(__file__, "rb") as f:  # rejected before the body is looked at
        r = httpx.post(server.url + "/embed", files={"file": ("x.mp4", f, "video/mp4")})
    assert r.status_code == 401


def _bad(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_bad_uploads_are_4xx_with_a_reason(
    http: httpx.Client, server: ServerProcess, media: dict[str, Path], tmp_path: Path
) -> None:
    good = media["clip"].read_bytes()
    corrupt = bytearray(good)
    corrupt[8:4000] = bytes(3992)  # ftyp survives, the moov/mdat start does not
    png = b"\x89PNG\r\n\x1a\n" + bytes(8) + b"IHDR" + bytes(200)
    from PIL import Image  # noqa: PLC0415  (only to write a real PNG)

    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "img.png")
    png = (tmp_path / "img.png").read_bytes()
    cases = {
        # name: (path, content type, expected status, expected code)
        "truncated": (
            _bad(tmp_path / "t.mp4", good[: len(good) // 3]),
            "video/mp4",
            {422},
            {"corrupt"},
        ),
        "corrupt": (
            _bad(tmp_path / "c.mp4", bytes(corrupt)),
            "video/mp4",
            {415, 422},
            {"corrupt", "not_media"},
        ),
        "zero": (_bad(tmp_path / "z.mp4", b""), "video/mp4", {400}, {"empty"}),
        "png_as_mp4": (_bad(tmp_path / "p.mp4", png), "video/mp4", {415}, {"not_media"}),
        "text": (_bad(tmp_path / "x.mp4", b"hello " * 1000), "video/mp4", {415}, {"not_media"}),
        "wrong_type": (media["clip"], "image/png", {415}, {"unsupported_media_type"}),
        "too_large": (_bad(tmp_path / "big.mp4", good * 8), "video/mp4", {413}, {"too_large"}),
        "too_long": (media["too_long"], "video/mp4", {413}, {"too_long"}),
        "no_audio": (media["silent"], "video/mp4", {422}, {"missing_audio"}),
    }
    for name, (path, ctype, statuses, codes) in cases.items():
        with open(path, "rb") as f:
            r = http.post(
                "/embed", files={"file": (path.name, f, ctype)}, data={"id": f"bad-{name}"}
            )
        assert r.status_code in statuses, (name, r.status_code, r.text)
        err = r.json()["error"]
        assert err["code"] in codes and len(err["message"]) > 10, (name, err)
        assert "upload-" not in err["message"], err  # no server-side temp names
        assert httpx.get(server.url + "/healthz").status_code == 200, name
    # malformed requests
    assert (
        http.post("/embed", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    )
    r = http.post("/embed", data={"id": "x"}, files={"other": ("a", b"1")})
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    for fields, code in [
        ({"id": "../../etc/passwd"}, "invalid_id"),
        ({"id": "a#w1"}, "invalid_id"),
        ({"metadata": "[1,2]"}, "invalid_metadata"),
        ({"window": "99"}, "invalid_window"),
        ({"stride": "-1"}, "invalid_stride"),
        ({"stride": "0.5"}, "invalid_stride"),
        ({"store": "maybe"}, "invalid_request"),
    ]:
        r = embed(http, media["clip"], **fields)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (fields, r.text)
    # a request that is wrong is 400 in every form (JSON here, multipart above)
    assert http.post("/search", json={"k": 3}).status_code == 400
    assert http.post("/search", json={"vector": [1.0, 2.0]}).status_code == 400
    assert http.post("/search", json={"id": "nope"}).status_code == 404
    assert http.post("/search", json={"id": "x", "modality": "smell"}).status_code == 400
    assert http.get("/clips/..%2F..%2Fetc").status_code == 404  # no such route
    assert http.get("/clips/.hidden").status_code == 400
    assert http.get("/clips/nope/thumbnail").status_code == 404
    # nothing bad was stored; the service still embeds
    assert not [
        c
        for c in http.get("/clips", params={"limit": 1000}).json()["items"]
        if c["id"].startswith("bad-")
    ]
    assert embed(http, media["clip"], id="after-bad").status_code == 200


def test_saturation_answers_429_with_retry_after(
    repo: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    env = server_env(
        repo, tmp_path, PEMT_MAX_CONCURRENT_JOBS=2, PEMT_RETRY_AFTER_S=1, PEMT_API_KEYS=""
    )
    data = media["webm"].read_bytes()
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for j in range(3):
                r = c.post(
                    "/embed",
                    files={"file": ("c.webm", data, "video/webm")},
                    data={"id": f"l{n}-{j}"},
                )
                with lock:
                    results.append((r.status_code, r.headers.get("retry-after")))

    with ServerProcess(env, log_path=tmp_path / "server.log") as srv:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == 24
        assert all(s == 200 or (s == 429 and ra == "1") for s, ra in results), results
        ok = sum(s == 200 for s, _ in results)
        assert ok >= 2
        stored = httpx.get(srv.url + "/info").json()["count"]
        assert stored == ok
        metrics = httpx.get(srv.url + "/metrics").text
        rejected = [ln for ln in metrics.splitlines() if ln.startswith("pemt_jobs_rejected_total ")]
        assert float(rejected[0].split()[1]) == 24 - ok


def test_bad_settings_stop_startup_with_a_clear_message(repo: Path, tmp_path: Path) -> None:
    env = {
        **server_env(repo, tmp_path),
        "PEMT_MAX_UPLOAD_BYTES": "-5",
        "PEMT_BACKEND": "tensorflow",
    }
    srv = ServerProcess(env, log_path=tmp_path / "bad.log")
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=30)
    log = srv.log_tail()
    assert "PEMT_MAX_UPLOAD_BYTES" in log and "PEMT_BACKEND" in log
    srv = ServerProcess(
        {**server_env(tmp_path / "nowhere", tmp_path)}, log_path=tmp_path / "bad2.log"
    )
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=30)
    assert "build_engine.py" in srv.log_tail()


def test_decoder_setting_is_checked_at_startup(repo: Path, tmp_path: Path) -> None:
    from pemt.media._select import nvdec_available

    srv = ServerProcess(
        {**server_env(repo, tmp_path), "PEMT_DECODER": "gpu"}, log_path=tmp_path / "d1.log"
    )
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=30)
    assert "PEMT_DECODER='gpu'" in srv.log_tail() and "nvdec" in srv.log_tail()
    if nvdec_available()[0]:
        return  # a GPU machine starts with nvdec
    srv = ServerProcess(
        {**server_env(repo, tmp_path), "PEMT_DECODER": "nvdec"}, log_path=tmp_path / "d2.log"
    )
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=60)
    log = srv.log_tail()
    assert "PEMT_DECODER=nvdec" in log and "PEMT_DECODER=auto" in log, log


def test_server_and_clients_do_not_import_torch(
    repo: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    code = f"""
import sys
from fastapi.testclient import TestClient
from server.core.config import Settings
from server.main import create_app
import clients.sdk, clients.cli, clients.triton_client, server.backends.triton
assert "torch" not in sys.modules, "torch imported at import time"
s = Settings(model_path={str(repo)!r}, data_dir={str(tmp_path)!r})
with TestClient(create_app(s)) as c:
    with open({str(media["clip"])!r}, "rb") as f:
        r = c.post("/embed", files={{"file": ("a.mp4", f, "video/mp4")}})
    assert r.status_code == 200, r.text
    assert c.post("/search", json={{"vector": r.json()["items"][0]["embedding"]}}).status_code == 200
bad = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
assert not bad, bad
print("ok")
"""
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_decoder_over_its_time_is_killed_and_the_pool_goes_on(tmp_path: Path) -> None:
    """A decode that overruns is stopped from outside (the child is killed); the next works."""
    import asyncio

    from pemt.config import get_config
    from server.api.errors import http_status
    from server.core.decode import DecodePool, DecodeRequest
    from server.core.errors import MediaRejected

    slow = make_test_video(tmp_path / "slow.mp4", seconds=8, width=160, height=120)
    quick = make_test_video(tmp_path / "quick.mp4", seconds=1, width=64, height=48)
    media_cfg = get_config("tiny").media
    # 0.01 s: well under the 0.05-0.15 s this clip takes to decode here (PyAV 15 to 18)
    pool = DecodePool(slots=1, timeout_s=0.01, grace_s=0.0)
    pool.warm()

    async def decode(req: DecodeRequest) -> list:
        return [b async for b in pool.stream(req, batch_size=4)]

    async def run() -> None:
        # time_budget_s=None: pemt.media would not stop itself, only the kill does
        with pytest.raises(MediaRejected) as e:
            await decode(DecodeRequest(str(slow), media_cfg))
        assert e.value.code == "timeout" and http_status(e.value) == 422
        pool.timeout_s = 30.0
        (batch,) = await decode(DecodeRequest(str(quick), media_cfg))
        assert len(batch.windows) == 1 and batch.thumbnails[0][:2] == b"\xff\xd8"

    asyncio.run(run())
    pool.close()


def test_backend_outage_is_503_and_parts_are_injectable(
    repo: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    """A backend that fails (Triton gone: a fault we stand in for) answers 503 + Retry-After;
    readiness follows the backend. Also exercises create_app(backend=...)."""
    from fastapi.testclient import TestClient

    from pemt.config import get_config
    from server.backends import Backend, BackendError
    from server.core.config import Settings
    from server.main import create_app

    class Down(Backend):
        name = "down"
        cfg = get_config("tiny")
        max_batch = 1

        async def embed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            raise BackendError("Triton at 127.0.0.1:1 is UNAVAILABLE")

        def ready(self) -> bool:
            return False

        def info(self) -> dict[str, str]:
            return {"backend": self.name}

        async def close(self) -> None:
            return None

    app = create_app(Settings(model_path=repo, data_dir=tmp_path), backend=Down())
    with TestClient(app) as c:
        with open(media["clip"], "rb") as f:
            r = c.post("/embed", files={"file": ("a.mp4", f, "video/mp4")})
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert r.json()["error"]["code"] == "backend_unavailable"
        assert c.get("/readyz").status_code == 503
        assert c.get("/info").json()["backend"] == {"backend": "down"}


def test_job_limiter_waits_briefly_then_refuses() -> None:
    import asyncio

    from server.api.errors import http_status
    from server.core.errors import Busy
    from server.core.metrics import Metrics
    from server.core.state import JobLimiter

    async def run() -> None:
        m = Metrics()
        jobs = JobLimiter(limit=1, wait_s=0.5, retry_after_s=3, metrics=m)
        await jobs.acquire()
        asyncio.get_running_loop().call_later(0.05, jobs.release)
        await jobs.acquire()  # waited for the release above
        assert jobs.in_flight == 1 and jobs.waiting == 0
        jobs.wait_s = 0.05
        with pytest.raises(Busy) as e:
            await jobs.acquire()
        assert http_status(e.value) == 429 and e.value.retry_after_s == 3
        jobs.release()
        async with jobs.slot():
            assert jobs.in_flight == 1
        assert jobs.in_flight == 0
        assert m.jobs_rejected._value.get() == 1

    asyncio.run(run())


def test_onnx_backend_reads_the_exported_config_and_checks_the_graph(repo: Path) -> None:
    import asyncio

    from pemt.config import get_config
    from pemt.spec import model_inputs
    from server.backends import BackendError
    from server.backends.onnx import OnnxBackend

    b = OnnxBackend.create(repo / "pemt" / "1" / "model.onnx", max_batch=64)
    assert b.cfg == get_config("tiny")  # from the model's own metadata, no fallback given
    assert b.max_batch == 8  # capped by config.pbtxt's max_batch_size
    # 11 rows run as chunks of 8 + 3 and come back whole
    rng = np.random.default_rng(0)
    x = {s.name: (rng.random((11, *s.shape)) * 255).astype(s.dtype) for s in model_inputs(b.cfg)}
    out = b.embed_sync(x)
    np.testing.assert_allclose(
        out["embedding"][8:], b.embed_sync({k: v[8:] for k, v in x.items()})["embedding"], atol=1e-5
    )
    with pytest.raises(ValueError, match="audio: dtype float64"):
        b.embed_sync({**x, "audio": x["audio"].astype(np.float64)})
    b.cfg = get_config("small")  # a graph exported for another config
    with pytest.raises(BackendError, match="pemt.spec says"):
        b._check_graph()
    asyncio.run(b.close())
