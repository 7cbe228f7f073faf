"""The Triton backend and the Triton gRPC clients against the real tritonserver (from the
nvidia-pytriton wheel, Python backend running the exported model.onnx on CPU). Results must
match the embedded ONNX Runtime backend on the same decoded windows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pemt.config import get_config
from pemt.media.encode import make_test_video
from pemt.triton_serve import TritonServer, triton_available
from server.backends import BackendError
from server.backends.onnx import OnnxBackend
from server.backends.triton import TritonBackend
from server.core.decode import DecodeRequest, decode_file
from server.testing import ServerProcess

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        not triton_available(), reason="nvidia-pytriton (tritonserver) not installed"
    ),
]
ATOL = 1e-4


@pytest.fixture(scope="module")
def triton(repo: Path) -> Iterator[TritonServer]:
    with TritonServer(repo, models=["pemt"]) as server:
        yield server


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("triton-media")
    return {
        "clip": make_test_video(d / "clip.mp4", seconds=3, width=96, height=64, pattern=1),
        "long": make_test_video(d / "long.mp4", seconds=9, width=64, height=48, pattern=4),
    }


@pytest.fixture(scope="module")
def reference(repo: Path, clips: dict[str, Path]) -> dict[str, np.ndarray]:
    """Embeddings from the embedded ONNX Runtime backend."""
    onnx = OnnxBackend.create(repo)
    out = {}
    for name, path in clips.items():
        dec = decode_file(DecodeRequest(str(path), onnx.cfg.media))
        out[name] = onnx.embed_sync(dec.inputs)["embedding"]
    asyncio.run(onnx.close())
    return out


def test_service_on_triton_matches_onnx(
    triton: TritonServer,
    repo: Path,
    clips: dict[str, Path],
    reference: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    env = {
        "PEMT_BACKEND": "triton",
        "PEMT_TRITON_URL": triton.grpc_url,
        "PEMT_MODEL_NAME": "pemt",
        "PEMT_DATA_DIR": str(tmp_path),
    }
    with (
        ServerProcess(env, log_path=tmp_path / "server.log") as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        info = c.get("/info").json()
        assert info["backend"]["backend"] == "triton" and info["backend"]["max_batch"] == 8
        for name, path in clips.items():
            r = c.post(
                "/embed",
                files={"file": (path.name, path.read_bytes(), "video/mp4")},
                data={"id": name},
            )
            assert r.status_code == 200, r.text
            got = np.array([i["embedding"] for i in r.json()["items"]], np.float32)
            np.testing.assert_allclose(got, reference[name], atol=ATOL)
        r = c.post(
            "/search",
            files={"file": ("q.mp4", clips["clip"].read_bytes(), "video/mp4")},
            data={"k": "1"},
        )
        assert r.json()["results"][0]["id"] == "clip"
        assert c.get("/readyz").status_code == 200


def test_triton_backend_checks_the_served_model(triton: TritonServer) -> None:
    async def run() -> None:
        be = await TritonBackend.create(triton.grpc_url, "pemt")
        try:
            assert be.cfg.name == "tiny"  # from the served config's pemt.config parameter
            assert await be.check_ready()
            with pytest.raises(ValueError, match="inputs are"):
                await be.embed({"frames": np.zeros((1, 2), np.uint8)})
            meta = await be._client.get_model_metadata("pemt", as_json=True)
            be.cfg = get_config("small")  # a model exported for another config
            with pytest.raises(BackendError, match="pemt.spec"):
                be._check_metadata(meta, batched=True)
        finally:
            await be.close()
        with pytest.raises(BackendError, match="did not serve model 'nope'"):
            await TritonBackend.create(triton.grpc_url, "nope", startup_wait_s=0.5)

    asyncio.run(run())


def test_triton_backend_unreachable_says_what_to_do() -> None:
    async def run() -> None:
        with pytest.raises(BackendError, match="PEMT_TRITON_URL"):
            await TritonBackend.create("127.0.0.1:1", "pemt", startup_wait_s=0.5)

    asyncio.run(run())


def test_triton_clients_sync_and_async_stream(
    triton: TritonServer, clips: dict[str, Path], reference: dict[str, np.ndarray]
) -> None:
    from clients.triton_client import AsyncTritonEmbedder, TritonEmbedder, TritonModelError

    with TritonEmbedder(triton.grpc_url, "pemt") as emb:
        got = [(w.start, out["embedding"]) for w, out in emb.embed_file(clips["long"], batch=2)]
    assert [s for s, _ in got] == [0, 2, 4, 5]
    np.testing.assert_allclose(np.stack([e for _, e in got]), reference["long"], atol=ATOL)
    with pytest.raises(TritonModelError, match="pemt.spec"):
        TritonEmbedder(triton.grpc_url, "pemt", config="small")

    async def stream() -> list[np.ndarray]:
        async with await AsyncTritonEmbedder.create(triton.grpc_url, "pemt") as a:
            return [out["embedding"] async for _, out in a.stream_file(clips["long"])]

    streamed = asyncio.run(stream())
    np.testing.assert_allclose(np.stack(streamed), reference["long"], atol=ATOL)


@pytest.mark.slow
def test_bulk_indexer_on_triton(
    triton: TritonServer,
    repo: Path,
    clips: dict[str, Path],
    reference: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    """`pemt index bulk --triton-url`: the model actors call Triton over gRPC (the service
    runs the same model in ONNX Runtime); the stored vectors equal the reference."""
    import json
    import os
    import subprocess
    import sys

    lib = tmp_path / "lib"
    lib.mkdir()
    for name, path in clips.items():
        (lib / f"{name}.mp4").write_bytes(path.read_bytes())
    env = {"PEMT_MODEL_PATH": str(repo), "PEMT_DATA_DIR": str(tmp_path / "data")}
    with ServerProcess(env, log_path=tmp_path / "server.log") as srv:
        cmd = [
            sys.executable, "-m", "pemt.cli", "index", "bulk", str(lib), "--url", srv.url,
            "--triton-url", triton.grpc_url, "--workers", "1",
            "--results", str(tmp_path / "results.jsonl"),
        ]  # fmt: skip
        run_env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent),
                   "RAY_AUTH_MODE": "disabled"}  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads(res.stdout)["indexed"] == 2
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for name in clips:
                items = c.get("/clips", params={"clip_id": f"{name}.mp4"}).json()["items"]
                got = [
                    c.get(
                        f"/clips/{it['id'].replace('#', '%23')}", params={"vectors": True}
                    ).json()["vectors"]["fused"]
                    for it in sorted(items, key=lambda it: it["start"])
                ]
                np.testing.assert_allclose(np.array(got), reference[name], atol=ATOL)
