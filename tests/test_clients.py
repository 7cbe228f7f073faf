"""clients.sdk (sync + async), the pemt-client CLI, against the real service; retry rules
against httpx.MockTransport (a 429 sequence on demand); timeouts against real sockets that never
answer; idempotent retries through a real proxy that loses an answer; the SDK's request fields
against the service's OpenAPI schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_type_hints

import httpx
import pytest

from clients.cli import build_parser
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
        best = c.search(id="cat1", k=2, modality="best").results  # says which vector matched
        assert len(best) == 2 and {h.modality for h in best} <= {"fused", "audio", "visual"}
        assert all(h.modality is None for h in c.search(id="cat1", k=2).results)
        cls = c.classify(file=media["dog2"], k=2)
        assert cls.label == "dog" and set(cls.scores) == {"dog"}
        assert c.classify(id="cat0", k=1).label == "cat"
        # classify's filter and a file query's window/stride reach the service
        assert c.classify(file=media["dog2"], k=2, filter={"label": "cat"}).label == "cat"
        assert c.classify(vector=q.items[0].embedding, k=3, filter={"label": "dog"}).label == "dog"
        assert c.search(file=media["long"], k=1, window=2, stride=1).ids
        with pytest.raises(PemtError) as e:
            c.search(file=media["long"], stride=0.5)
        assert e.value.status == 400 and e.value.code == "invalid_stride"
        with pytest.raises(ValueError, match="window= and stride= apply to a file= query"):
            c.search(id="cat0", window=2)

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
    assert cli_main(["search", "--id", "cli0", "-k", "1", "--modality", "best"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["modality"] is not None
    assert cli_main(["classify", "--id", "cli0", "-k", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("cat", "dog")
    assert cli_main(["list", "--limit", "50"]) == 0
    every = [c["id"] for c in json.loads(capsys.readouterr().out)["items"]]
    assert "cli0" in every and len(every) >= 3
    # by cursor: a page's next, --after it; --all walks everything, a JSON line per item
    assert cli_main(["list", "--limit", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in first["items"]] == every[:1] and first["next"] == every[0]
    assert cli_main(["list", "--limit", "1", "--after", first["next"]]) == 0
    assert [c["id"] for c in json.loads(capsys.readouterr().out)["items"]] == every[1:2]
    assert cli_main(["list", "--all", "--limit", "2"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == every
    assert cli_main(["list", "--all", "--limit", "1", "--after", every[0]]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == every[1:]
    assert cli_main(["list", "--all", "--offset", "1"]) == 2
    assert "use --after" in capsys.readouterr().err
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


# --- timeouts: real sockets that never answer ---------------------------------------------------


@contextlib.contextmanager
def _silent_server() -> Iterator[str]:
    """A listening socket that never accepts: connections complete (the kernel's backlog), the
    request goes out, no answer ever comes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def _full_backlog_server() -> Iterator[str]:
    """A listening socket whose accept queue is full: new connections are never set up (the
    kernel drops their SYNs), so connecting times out."""
    with socket.socket() as s, contextlib.ExitStack() as stack:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        port = s.getsockname()[1]
        for _ in range(4):
            c = stack.enter_context(socket.socket())
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
        time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"


def test_read_and_connect_timeouts_raise_pemt_error(
    media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with _silent_server() as url:
        t0 = time.monotonic()
        with PemtClient(url, read_timeout=0.3, retries=3) as c, pytest.raises(PemtError) as e:
            c.embed(media["cat0"])
        assert e.value.status == 0 and e.value.code == "timeout", e.value
        assert "read_timeout=0.3" in e.value.message
        assert time.monotonic() - t0 < 3  # not retried: the service may still be working

        async def run() -> PemtError:
            async with AsyncPemtClient(url, read_timeout=0.3) as c:
                with pytest.raises(PemtError) as e:
                    await c.list()
                return e.value

        assert asyncio.run(run()).code == "timeout"
        assert cli_main(["--url", url, "--read-timeout", "0.3", "list"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("pemt-client: timeout:") and err.count("\n") == 1, err
    with _full_backlog_server() as url:
        t0 = time.monotonic()
        with (
            PemtClient(url, connect_timeout=0.2, read_timeout=60, retries=1, backoff=0.05) as c,
            pytest.raises(PemtError) as e,
        ):
            c.list()
        assert e.value.code == "unreachable" and "2 attempts" in e.value.message, e.value
        assert time.monotonic() - t0 < 5  # the connect timeout, not the 60-s read timeout
    with pytest.raises(ValueError, match="read_timeout must be > 0"):
        PemtClient(read_timeout=0)


# --- retries are idempotent: an answer lost on the way back -------------------------------------


class _LosingProxy:
    """A TCP proxy to ``upstream`` that, for the next ``lose`` connections, forwards the request
    and waits for the start of the answer (the service has done the work), then closes the
    client's connection without passing the answer on. Real sockets on loopback."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.lose = 0
        self.lost = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            losing = self.lose > 0
            self.lose -= losing
            threading.Thread(target=self._handle, args=(client, losing), daemon=True).start()

    def _handle(self, client: socket.socket, losing: bool) -> None:
        with client, socket.create_connection(self.upstream) as up:
            threading.Thread(target=self._pump, args=(client, up), daemon=True).start()
            first = up.recv(65536)  # the service answered: the request was handled
            if losing:
                self.lost += 1
                client.shutdown(socket.SHUT_RDWR)
                return
            while first:
                client.sendall(first)
                first = up.recv(65536)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def test_retried_embed_without_id_stores_the_clip_once(
    server: ServerProcess, media: dict[str, Path]
) -> None:
    proxy = _LosingProxy(server.url)
    try:
        with PemtClient(server.url, api_key=KEY) as direct:
            before = direct.list(limit=1).total
            with PemtClient(proxy.url, api_key=KEY, backoff=0.05) as c:
                proxy.lose = 1
                res = c.embed(media["dog2"], metadata={"label": "lost"})
            assert proxy.lost == 1  # the first answer never arrived; the retry's did

            async def run() -> list[str]:
                async with AsyncPemtClient(proxy.url, api_key=KEY, backoff=0.05) as a:
                    proxy.lose = 1
                    return (await a.embed(media["cat2"], metadata={"label": "lost"})).ids

            ids = asyncio.run(run())
            assert proxy.lost == 2
            # each clip stored once, under the id the client generated before its first attempt
            assert direct.list(limit=1).total == before + 2
            assert len(res.ids) == 1 and len(res.ids[0]) == 32 and len(ids) == 1
            for item_id in (*res.ids, *ids):
                assert direct.get(item_id).metadata["label"] == "lost"
                assert direct.delete(item_id) == 1
    finally:
        proxy.close()


# --- the SDK sends what the service's schema describes, all of it -------------------------------

# every operation of the service and the SDK method that sends it (health/metrics are for ops)
OPERATIONS = {
    ("post", "/embed"): "embed",
    ("post", "/search"): "search",
    ("post", "/classify"): "classify",
    ("get", "/clips"): "list",
    ("get", "/clips/{id}"): "get",
    ("delete", "/clips/{id}"): "delete",
    ("get", "/clips/{id}/thumbnail"): "thumbnail",
    ("get", "/clips/{id}/media"): "media",
    ("get", "/info"): "info",
    ("get", "/readyz"): "ready",
    ("post", "/jobs"): "submit",
    ("get", "/jobs"): "jobs",
    ("get", "/jobs/{job_id}"): "job",
    ("delete", "/jobs/{job_id}"): "cancel",
    ("put", "/clips/{id}"): "put_clip",
}
NOT_FOR_CLIENTS = {("get", "/healthz"), ("get", "/metrics")}
# a value for every argument name an SDK method takes (the request's own fields)
SAMPLE = {
    "file": b"not sent",
    "id": "clip1",
    "vector": [0.5, 0.5],
    "k": 3,
    "filter": {"label": "dog"},
    "modality": "audio",
    "window": 2.0,
    "stride": 1.0,
    "label_key": "kind",
    "metadata": {"a": 1},
    "store": False,
    "offset": 1,
    "limit": 2,
    "clip_id": "clip1",
    "after": "clip0",
    "vectors": True,
    "path": "/library/film.mp4",
    "state": "done",
    "windows": [
        {
            "window": 0,
            "start": 0.0,
            "end": 4.0,
            "has_audio": False,
            "has_video": True,
            "vectors": {"fused": [1.0, 0.0], "visual": [0.0, 1.0]},
            "thumbnail": b"\xff\xd8",
        }
    ],
    "model": {"embed_dim": 2, "config_sha256": "0" * 64},
}
CLIENT_ONLY = {"filename", "content_type"}  # how the file is labelled, not a field


def _schema_fields(openapi: dict[str, Any], op: dict[str, Any]) -> dict[str, set[str]]:
    """Field names per way of sending: 'query', 'multipart/form-data', 'application/json'."""

    def props(schema: dict[str, Any]) -> set[str]:
        if "$ref" in schema:
            schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return set(schema.get("properties", {}))

    out = {"query": {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}}
    for ctype, body in op.get("requestBody", {}).get("content", {}).items():
        out[ctype] = props(body["schema"])
    return out


def _sent_fields(request: httpx.Request) -> dict[str, set[str]]:
    ctype = request.headers.get("content-type", "").split(";")[0]
    out = {"query": set(request.url.params.keys())}
    body = request.read()
    if ctype == "multipart/form-data":
        names = re.findall(rb'Content-Disposition: form-data; name="([^"]+)"', body)
        out[ctype] = {n.decode() for n in names}
    elif ctype == "application/json":
        out[ctype] = set(json.loads(body))
    return out


def test_sdk_fields_match_the_service_schema(repo: Path, tmp_path: Path) -> None:
    """Built from server.main's own OpenAPI schema: every field the SDK sends exists there, and
    every field there can be sent by the SDK (a new server field without SDK support fails)."""
    import inspect

    from server.core.config import Settings
    from server.main import create_app

    openapi = create_app(Settings(model_path=repo, data_dir=tmp_path)).openapi()
    ops = {(m, path): op for path, item in openapi["paths"].items() for m, op in item.items()}
    ops = {key: op for key, op in ops.items() if not key[1].startswith("/docs")}
    assert set(ops) - NOT_FOR_CLIENTS == set(OPERATIONS), "an operation without an SDK method"

    client = PemtClient("http://pemt.test")
    for (method, path), name in OPERATIONS.items():
        sync, asyn = getattr(PemtClient, name), getattr(AsyncPemtClient, name)
        assert inspect.signature(sync) == inspect.signature(asyn), name
        want = _schema_fields(openapi, ops[(method, path)])
        if name == "ready":
            continue  # no fields
        params = [p for p in inspect.signature(sync).parameters if p != "self"]
        args = {p: SAMPLE[p] for p in params if p not in CLIENT_ONLY}
        # the forms one method can send: a query is an upload, or an id, or a vector
        forms = [args]
        if "path" in args:  # a job is an upload or a server-side path
            forms = [
                {k: v for k, v in args.items() if k != "path"},
                {k: v for k, v in args.items() if k != "file"},
            ]
        if "vector" in args:
            forms = [
                {k: v for k, v in args.items() if k not in ("id", "vector")},
                {k: v for k, v in args.items() if k not in ("file", "vector", "window", "stride")},
                {k: v for k, v in args.items() if k not in ("file", "id", "window", "stride")},
            ]
        sent: dict[str, set[str]] = {}
        builder = getattr(client, f"_{name}_call")
        defaults = {p: v.default for p, v in inspect.signature(sync).parameters.items()}
        for form in forms:
            kwargs = {
                p: form.get(p, defaults.get(p)) for p in inspect.signature(builder).parameters
            }
            kwargs = {p: None if v is inspect.Parameter.empty else v for p, v in kwargs.items()}
            call = builder(**kwargs)
            assert call.method.lower() == method, name
            files = None
            if call.upload is not None:
                files = {"file": (call.upload.filename, call.upload.read(), "video/mp4")}
            request = client._http.build_request(
                call.method, call.path, params=call.params, json=call.json, data=call.data,
                files=files,
            )  # fmt: skip
            for where, fields in _sent_fields(request).items():
                assert fields <= want.get(where, set()), (
                    name,
                    where,
                    fields - want.get(where, set()),
                )
                sent.setdefault(where, set()).update(fields)
        sent_all = set().union(*sent.values())
        want_all = set().union(*want.values())
        # path parameters travel in the URL; everything else must be sendable
        assert want_all - sent_all == set(), (name, want_all - sent_all)
    client.close()

    # the modalities each query route takes (search also "best", classify not): the SDK's
    # types and the CLI's choices are the service's, in JSON and multipart alike
    parser = build_parser()
    for name in ("search", "classify"):
        content = ops[("post", f"/{name}")]["requestBody"]["content"]
        enums = {c: body["schema"]["properties"]["modality"]["enum"] for c, body in content.items()}
        sdk = get_args(get_type_hints(PemtClient.__dict__[name])["modality"])
        assert enums == {c: list(sdk) for c in content}, (name, enums, sdk)
        assert ("best" in sdk) == (name == "search"), sdk
        for modality in sdk:
            args = parser.parse_args([name, "--id", "x", "--modality", modality])
            assert args.modality == modality
    with pytest.raises(SystemExit):
        parser.parse_args(["classify", "--id", "x", "--modality", "best"])
