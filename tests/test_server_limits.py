"""Bounds on the work one upload can cause, against real files made with PyAV.

A few KB of video must not become thousands of windows: frames far apart are damage, not an
hour of held frames (``max_gap_s``); the windows of one request are capped
(``PEMT_MAX_WINDOWS_PER_REQUEST``, checked before decoding and while streaming); the client's
stride has a floor (``PEMT_MIN_STRIDE_S``); and windows stream from the decoder in batches.
The service runs for real (uvicorn on loopback, the tiny model, FAISS + SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pemt.config import get_config
from pemt.media import CorruptMediaError, DecodeLimits, load_windows
from pemt.media.encode import make_sparse_video, make_test_video
from server.api.errors import http_status
from server.core.config import SettingsError, load_settings
from server.core.decode import DecodePool, DecodeRequest, least_windows
from server.core.errors import MediaRejected
from server.testing import ServerProcess

TINY = get_config("tiny").media  # 4-s windows of 1-s segments, default stride 2 s
MAX_WINDOWS = 6
KEY = "limits-key"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    return {
        # ~2.5 KB that claims an hour: 13 frames 299 s apart
        "gap13": make_sparse_video(d / "gap13.mp4", [299.0 * i for i in range(13)]),
        "gap3": make_sparse_video(d / "gap3.mp4", [299.0 * i for i in range(3)]),
        # 12 s of frames, then one 60 s later: windows before the damage, then the error
        "late_gap": make_sparse_video(d / "late.mp4", [i / 4 for i in range(48)] + [72.0]),
        # 2 s of frames, then one 7 s later (a short file: few windows)
        "short_gap": make_sparse_video(d / "short.mp4", [i / 4 for i in range(8)] + [9.0]),
        # 18 s: 8 windows of 4 s every 2 s, over the limit of 6
        "long": make_test_video(d / "long.mp4", seconds=18, width=32, height=32, fps=4),
        # 14.6 s: the declared duration says 6 windows, the decoded segments give 7
        "edge": make_test_video(d / "edge.mp4", seconds=14.6, width=32, height=32, fps=4),
        "clip": make_test_video(d / "clip.mp4", seconds=3, width=32, height=32, fps=4),
    }


# --- pemt.media: gaps are bounded -------------------------------------------------------------


def test_frames_far_apart_are_damage_not_held(files: dict[str, Path]) -> None:
    with pytest.raises(CorruptMediaError, match="jump from 0.0 s to 299.0 s") as e:
        load_windows(files["gap13"], TINY)
    assert e.value.code == "corrupt" and "max_gap_s" in str(e.value)
    # the limit is a setting: a gap under it is held (sample and hold), as before
    windows = load_windows(files["gap3"], TINY, stride_s=299, limits=DecodeLimits(max_gap_s=300))
    assert windows[-1].end == pytest.approx(598.04, abs=0.1)
    with pytest.raises(ValueError, match="positive"):
        DecodeLimits(max_gap_s=0)


def test_a_long_last_frame_is_held_only_max_gap(tmp_path: Path) -> None:
    """A last frame that claims 20 s is held 5 s; after that the window's video is masked."""
    path = make_sparse_video(
        tmp_path / "still.mp4", [i / 4 for i in range(8)], last_duration=20.0, audio_at=0.0,
        audio_seconds=22.0,
    )  # fmt: skip
    windows = load_windows(path, TINY, stride_s=4)
    seen = np.concatenate([w.visual_mask for w in windows])  # (segments,)
    heard = np.concatenate([w.audio_mask for w in windows])
    assert seen[:6].all() and not seen[8:].any() and heard[:20].all()


def test_audio_starting_late_is_damage_not_padded(tmp_path: Path) -> None:
    path = make_sparse_video(tmp_path / "late_audio.mp4", [i / 4 for i in range(8)], audio_at=30.0)
    with pytest.raises(CorruptMediaError, match="audio timestamps jump"):
        load_windows(path, TINY)


def test_least_windows_never_overestimates(files: dict[str, Path]) -> None:
    for name in ("long", "edge", "clip"):
        got = len(load_windows(files[name], TINY))
        from pemt.media import probe

        duration = probe(files[name]).duration
        assert duration is not None
        assert least_windows(duration, 1.0, TINY.num_segments, 2) <= got
    assert least_windows(3588.04, 1.0, 30, 15) == 239 and least_windows(2.0, 1.0, 4, 2) == 1


# --- the decode pool streams batches ----------------------------------------------------------


def test_pool_streams_batches_and_stops_at_the_limit(files: dict[str, Path]) -> None:
    pool = DecodePool(slots=1, timeout_s=60.0)
    pool.warm()

    async def batches(path: Path, n: int, **kw: object) -> list:
        req = DecodeRequest(str(path), TINY, **kw)  # type: ignore[arg-type]
        return [b async for b in pool.stream(req, batch_size=n)]

    async def run() -> None:
        got = await batches(files["long"], 3)
        assert [len(b.windows) for b in got] == [3, 3, 2]
        assert [w.start for b in got for w in b.windows] == [0, 2, 4, 6, 8, 10, 12, 14]
        assert got[0].inputs["frames"].shape == (
            3,
            *load_windows(files["clip"], TINY)[0].frames.shape,
        )
        # windows before damage arrive as batches before the error: nothing waits for the end
        received = []
        with pytest.raises(MediaRejected) as e:
            async for b in pool.stream(DecodeRequest(str(files["late_gap"]), TINY), 2):
                received.append(len(b.windows))
        assert received == [2, 2] and e.value.code == "corrupt"
        # over max_windows: refused from the declared duration before any window is decoded
        with pytest.raises(MediaRejected) as e:
            await batches(files["long"], 2, max_windows=MAX_WINDOWS)
        assert e.value.code == "too_many_windows" and http_status(e.value) == 413
        assert "8 windows" in e.value.message
        # ... or stopped at the first window over it when the declared duration undercounts
        received = []
        with pytest.raises(MediaRejected) as e:
            req = DecodeRequest(str(files["edge"]), TINY, max_windows=MAX_WINDOWS)
            async for b in pool.stream(req, 2):
                received.append(len(b.windows))
        assert sum(received) == MAX_WINDOWS and e.value.code == "too_many_windows"
        # backpressure: while the caller holds a batch the child waits (a full pipe), so
        # stopping early finds it still running, and it is killed, not left behind
        stream = pool.stream(DecodeRequest(str(files["long"]), TINY), 1)
        async with contextlib.aclosing(stream):
            async for _ in stream:
                (job,) = pool._jobs
                break
        assert job.proc.exitcode == -signal.SIGKILL and not pool._jobs
        # a shorter window pads to the model's T with masked segments
        (b,) = await batches(files["clip"], 4, window_segments=2, stride_s=2.0)
        assert b.inputs["frames"].shape[1] == TINY.num_segments
        assert b.inputs["visual_mask"][:, :2].all() and not b.inputs["visual_mask"][:, 2:].any()

    try:
        asyncio.run(run())
    finally:
        pool.close()


def test_settings_refuse_bad_limits() -> None:
    with pytest.raises(SettingsError, match="PEMT_MAX_WINDOWS_PER_REQUEST"):
        load_settings(max_windows_per_request=0)
    with pytest.raises(SettingsError, match="PEMT_MIN_STRIDE_S"):
        load_settings(min_stride_s=-1)
    with pytest.raises(SettingsError, match="PEMT_MAX_GAP_S"):
        load_settings(max_gap_s=0)


# --- the service ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("limits-data")
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(data),
        "PEMT_API_KEYS": KEY,
        "PEMT_MAX_WINDOWS_PER_REQUEST": str(MAX_WINDOWS),
        "PEMT_MIN_STRIDE_S": "2",
        "PEMT_DECODE_TIMEOUT_S": "60",
        # the window limit is under test here, not the synchronous length limit (test_jobs)
        "PEMT_EMBED_MAX_DURATION_S": "3600",
    }  # default PEMT_MAX_DURATION_S (one hour) and PEMT_MAX_GAP_S (5 s)
    srv = ServerProcess(env, log_path=data / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=120) as c:
        yield c


def embed(http: httpx.Client, path: Path, **fields: object) -> httpx.Response:
    data = {k: str(v) for k, v in fields.items()}
    with open(path, "rb") as f:
        return http.post("/embed", files={"file": (path.name, f, "video/mp4")}, data=data)


def error(r: httpx.Response) -> tuple[int, str, str]:
    body = r.json()["error"]
    return r.status_code, body["code"], body["message"]


def test_hostile_gap_files_are_refused(http: httpx.Client, files: dict[str, Path]) -> None:
    # the 2.5-KB "hour": its declared duration alone is over the window limit, so it is
    # refused before any frame is decoded
    status, code, message = error(embed(http, files["gap13"], id="gap13"))
    assert (status, code) == (413, "too_many_windows"), message
    assert "3588 s" in message and "PEMT_MAX_WINDOWS_PER_REQUEST" in message
    # under the window limit, the 7-s gap itself is refused as damage
    status, code, message = error(embed(http, files["short_gap"], id="short_gap"))
    assert (status, code) == (422, "corrupt") and "PEMT_MAX_GAP_S" in message, message
    assert message.startswith("the upload: the video timestamps jump from 1.8 s to 9.0 s")
    # both at once: both answered, the server goes on
    out: list[int] = []
    threads = [
        threading.Thread(target=lambda p=p: out.append(embed(http, files[p]).status_code))
        for p in ("gap13", "short_gap")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == [413, 422]
    assert embed(http, files["clip"], id="ok").status_code == 200
    assert http.get("/clips", params={"clip_id": "gap13"}).json()["total"] == 0


def test_windows_per_request_are_capped(http: httpx.Client, files: dict[str, Path]) -> None:
    status, code, message = error(embed(http, files["long"], id="long"))
    assert (status, code) == (413, "too_many_windows"), message
    assert "PEMT_MAX_WINDOWS_PER_REQUEST" in message and "stride" in message
    # a larger stride fits under the limit
    r = embed(http, files["long"], id="long", stride=4)
    assert r.status_code == 200, r.text
    assert [i["start"] for i in r.json()["items"]] == [0, 4, 8, 12, 14]
    # a small stride on a tiny file that claims ten minutes: refused before decoding
    assert error(embed(http, files["gap3"], stride=2))[:2] == (413, "too_many_windows")
    # search uploads have the same bound
    with open(files["long"], "rb") as f:
        r = http.post("/search", files={"file": ("q.mp4", f, "video/mp4")})
    assert error(r)[:2] == (413, "too_many_windows")
    assert http.get("/clips", params={"clip_id": "long"}).json()["total"] == 5


def test_stride_has_a_floor(http: httpx.Client, files: dict[str, Path]) -> None:
    status, code, message = error(embed(http, files["clip"], stride=1))
    assert (status, code) == (400, "invalid_stride")
    assert "PEMT_MIN_STRIDE_S=2" in message and "stride=2" in message
    r = embed(http, files["clip"], stride=2, window=2, store="false")
    assert r.status_code == 200, r.text
    assert [(i["start"], i["end"]) for i in r.json()["items"]] == [(0, 2), (1, 3)]
    info = http.get("/info").json()["config"]
    assert info["max_windows_per_request"] == MAX_WINDOWS and info["max_gap_s"] == 5.0
    assert json.loads(json.dumps(info))["min_stride_s"] == 2.0
