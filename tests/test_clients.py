"""clients.sdk (sync + async), the pemt-client CLI, against the real service; retry rules
against httpx.MockTransport (a 429 sequence on demand)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clients.cli import main as cli_main
from clients.sdk import AsyncPemtClient, EmbedResult, PemtClient, PemtError
from pemt.media.encode import make_test_video
from server.testing import ServerProcess

KEY = "sdk-key"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sdk-media")
    out = {"long": make_test_video(d / "long.mp4", seconds=6, width=64, height=48, pattern=3)}
    for label, (pattern, tone) in {"cat": (0, 440), "dog": (5, 2500)}.items():
        for i in range(3):
            out[f"{label}{i}"] = make_test_video(
                d / f"{label}{i}.mp4",
                seconds=3,  # one length: the classes differ in content only
                width=96,
                height=64,
                pattern=pattern,
                tone_hz=tone + 50 * i,
            )
    return out


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("sdk-data")
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(data),
        "PEMT_API_KEYS": KEY,
        "PEMT_MAX_CONCURRENT_JOBS": "1",
        "PEMT_RETRY_AFTER_S": "1",
    }
    srv = ServerProcess(env, log_path=data / "server.log").start()
    yield srv
    srv.stop()


def test_sync_client_round_trip(server: ServerProcess, media: dict[str, Path]) -> None:
    with PemtClient(server.url, api_key=KEY) as c:
        assert c.ready()
        for label in ("cat", "dog"):
            for i in range(2):
                res = c.embed(media[f"{label}{i}"], id=f"{label}{i}", metadata={"label": label})
                assert isinstance(res, EmbedResult) and res.ids == [f"{label}{i}"]
        # bytes and file objects upload too
        res = c.embed(media["long"].read_bytes(), id="long", filename="long.mp4")
        assert res.ids == ["long#w0", "long#w1"] and res.items[1].start == 2.0
        with open(media["cat2"], "rb") as f:
            q = c.embed(f, store=False)
        assert not q.stored and len(q.items[0].embedding) == 32

        hits = c.search(file=media["cat0"], k=2)
        assert hits.ids[0] == "cat0" and hits.results[0].score > 0.9999
        assert (
            c.search(vector=q.items[0].embedding, k=1, filter={"label": "dog"})
            .ids[0]
            .startswith("dog")
        )
        assert "cat1" not in c.search(id="cat1", k=3).ids
        assert c.search(id="cat1", k=2, modality="audio").results
        cls = c.classify(file=media["dog2"], k=2)
        assert cls.label == "dog" and set(cls.scores) == {"dog"}
        assert c.classify(id="cat0", k=1).label == "cat"

        clip = c.get("long#w1", vectors=True)
        assert (
            clip.clip_id == "long"
            and clip.vectors is not None
            and len(clip.vectors["visual"]) == 32
        )
        assert c.thumbnail("cat0")[:2] == b"\xff\xd8"
        page = c.list(0, 2)
        assert len(page.items) == 2 and page.total == 6
        assert [x.id for x in c.iter_clips(page_size=4)] == sorted(
            ["cat0", "cat1", "dog0", "dog1", "long#w0", "long#w1"]
        )
        assert c.delete("long") == 2
        assert c.info()["count"] == 4

        with pytest.raises(PemtError) as e:
            c.get("long#w0")
        assert e.value.status == 404 and e.value.code == "not_found"
        with pytest.raises(PemtError) as e:
            c.embed(b"definitely not a video", filename="x.mp4")
        assert e.value.status == 415 and "not a media file" in e.value.message
        with pytest.raises(ValueError, match="exactly one"):
            c.search(id="a", vector=[1.0])
        with pytest.raises(FileNotFoundError):
            c.embed("/no/such/file.mp4")
    with PemtClient(server.url) as anon, pytest.raises(PemtError) as e:
        anon.list()
    assert e.value.status == 401


def test_async_client(server: ServerProcess, media: dict[str, Path]) -> None:
    async def run() -> None:
        async with AsyncPemtClient(server.url, api_key=KEY) as c:
            assert await c.ready()
            res = await c.embed(media["dog1"], id="adog", metadata={"label": "dog"})
            assert res.ids == ["adog"]
            assert set((await c.search(file=media["dog1"], k=2)).ids) == {"adog", "dog1"}  # twins
            assert (await c.classify(id="adog", k=1)).label == "dog"
            assert (await c.get("adog")).metadata["label"] == "dog"
            ids = [x.id async for x in c.iter_clips(page_size=2)]
            assert "adog" in ids
            assert await c.delete("adog") == 1
            with pytest.raises(PemtError, match="404"):
                await c.thumbnail("adog")

    asyncio.run(run())


def test_clients_ride_out_real_429s(server: ServerProcess, media: dict[str, Path]) -> None:
    """One job slot on the server, four clients at once: every call succeeds by retrying."""
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with PemtClient(server.url, api_key=KEY, retries=20) as c:
                c.embed(media["cat1"], id=f"busy{n}", store=False)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    metrics = httpx.get(server.url + "/metrics").text
    assert "pemt_jobs_rejected_total" in metrics


def _transport(
    statuses: list[int], calls: list[float], retry_after: str = "0.05"
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        status = statuses[min(len(calls) - 1, len(statuses) - 1)]
        if status == 200:
            return httpx.Response(200, json={"items": [], "total": 0, "offset": 0, "limit": 100})
        return httpx.Response(
            status,
            headers={"Retry-After": retry_after},
            json={"error": {"code": "busy", "message": "busy; retry"}},
        )

    return httpx.MockTransport(handler)


def test_retry_rules_honour_retry_after() -> None:
    calls: list[float] = []
    with PemtClient("http://pemt.test", transport=_transport([429, 503, 200], calls)) as c:
        assert c.list().total == 0
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.04
    calls.clear()
    with (
        PemtClient("http://pemt.test", retries=2, transport=_transport([429], calls)) as c,
        pytest.raises(PemtError) as e,
    ):
        c.list()
    assert len(calls) == 3 and e.value.status == 429 and e.value.retry_after == 0.05
    calls.clear()
    with (
        PemtClient("http://pemt.test", transport=_transport([400], calls)) as c,
        pytest.raises(PemtError),
    ):
        c.list()
    assert len(calls) == 1  # a 4xx other than 429 is not retried
    calls.clear()

    async def run() -> None:
        async with AsyncPemtClient(
            "http://pemt.test", transport=_transport([429, 200], calls)
        ) as c:
            assert (await c.list()).total == 0

    asyncio.run(run())
    assert len(calls) == 2
    with pytest.raises(ValueError, match="http"):
        PemtClient("ftp://x")


def test_cli(
    server: ServerProcess,
    media: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ["--url", server.url, "--api-key", KEY]
    assert (
        cli_main(
            [*base, "embed", str(media["cat2"]), "--id", "cli0", "--metadata", '{"label": "cat"}']
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in out["items"]] == ["cli0"] and "embedding" not in out["items"][0]
    monkeypatch.setenv("PEMT_URL", server.url)
    monkeypatch.setenv("PEMT_API_KEY", KEY)
    assert cli_main(["search", "--file", str(media["cat2"]), "-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["id"] == "cli0"
    assert cli_main(["classify", "--id", "cli0", "-k", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("cat", "dog")
    assert cli_main(["list", "--limit", "50"]) == 0
    assert "cli0" in [c["id"] for c in json.loads(capsys.readouterr().out)["items"]]
    assert cli_main(["delete", "cli0"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "cli0", "deleted": 1}

    # bad input: one line on stderr, non-zero exit, no traceback
    for argv, code in [
        (["delete", "cli0"], 1),
        (["embed", "/no/such.mp4"], 2),
        (["embed", str(media["cat2"]), "--metadata", "{oops"], 2),
        (["search", "--vector", "[1, 2]"], 1),
        (["search"], 2),
        (["--api-key", "wrong", "list"], 1),
        (["--url", "http://127.0.0.1:1", "--retries", "0", "list"], 1),
    ]:
        with pytest.raises(SystemExit) if code == 2 else _noop():
            rc = cli_main(argv)
            assert rc == code, (argv, rc)
        err = capsys.readouterr().err
        assert err.startswith("pemt-client") and err.count("\n") == 1 and "Traceback" not in err, (
            argv,
            err,
        )


class _noop:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_console_script(server: ServerProcess) -> None:
    exe = Path(sys.executable).parent / "pemt-client"
    if not exe.exists():
        pytest.skip("pemt-client console script not installed (pip install -e .)")
    res = subprocess.run(
        [str(exe), "--url", server.url, "list"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1 and "401" in res.stderr and res.stderr.count("\n") == 1
    res = subprocess.run(
        [str(exe), "--url", server.url, "--api-key", KEY, "list", "--limit", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and "items" in json.loads(res.stdout)
