"""Run the real service in a subprocess (uvicorn on 127.0.0.1, a free port) for tests and
benchmarks. Plain library: no pytest import."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from pemt.triton_serve import free_port

__all__ = [
    "MilvusLiteServer",
    "ServerProcess",
    "build_test_repository",
    "free_port",
    "running_server",
]


class ServerProcess:
    """``uvicorn server.main:create_app --factory`` with ``PEMT_*`` settings from ``env``."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cwd = cwd or Path(__file__).resolve().parent.parent
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "server.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "5",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._log = out
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode} during start-up:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the uvicorn process: no shutdown, no lifespan cleanup."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_server(env: Mapping[str, str], **kw: object) -> Iterator[ServerProcess]:
    srv = ServerProcess(env, **kw)  # type: ignore[arg-type]
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


_EXPORT_SCRIPT = """
import sys, torch, pemt
from pemt.config import get_config
from pemt.model import build_model
torch.manual_seed(int(sys.argv[3]))
model = build_model(get_config(sys.argv[1])).eval()
with torch.no_grad():  # every weight perturbed (rotations included): at AVBERT's init the start
    for p in model.parameters():  # tokens barely see the content, and tests compare contents
        p.add_(0.1 * torch.randn_like(p))
pemt.save(model, sys.argv[2])
"""


def build_test_repository(
    out: Path,
    config: str = "tiny",
    *,
    seed: int = 0,
    triton_backend: str = "python",
    timeout: float = 300.0,
) -> Path:
    """A randomly initialised (and perturbed) ``config`` model exported the real way
    (``export/build_engine.py``) into the model repository ``out`` (``out/pemt/config.pbtxt``,
    ``out/pemt/1/model.onnx``); an ``out`` that already holds a pemt model is returned as it is.

    The python Triton backend makes the same repository servable by the CPU tritonserver of
    nvidia-pytriton and by the embedded ONNX backend. Runs in subprocesses (they import torch;
    the caller need not). Returns ``out``.
    """
    out = Path(out)
    if any(out.glob("pemt/*/model.onnx")):
        return out
    root = Path(__file__).resolve().parent.parent
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = out.parent / f"{config}-seed{seed}.safetensors"
    subprocess.run(
        [sys.executable, "-c", _EXPORT_SCRIPT, config, str(ckpt), str(seed)],
        check=True,
        cwd=root,
        timeout=timeout,
        capture_output=True,
    )
    res = subprocess.run(
        [
            sys.executable,
            str(root / "export" / "build_engine.py"),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(out),
            "--format",
            "onnx",
            "--triton-backend",
            triton_backend,
            "--no-clip",
        ],
        cwd=root,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"export/build_engine.py failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        )
    return out


class MilvusLiteServer:
    """``milvus-lite server`` (the pip package ``milvus-lite``: Milvus's gRPC protocol over a
    local engine) on 127.0.0.1 and a free port, for tests and benchmarks; ``uri`` is what
    ``PEMT_MILVUS_URI`` takes.

    ``--max-workers 1``: milvus-lite's engine is single-writer per collection (its docs: writes
    to one collection must be serialized), and several API replicas write at once; one gRPC
    worker serializes every call. A Milvus standalone or cluster needs no such setting.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, log_path: Path | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or self.data_dir.with_name(self.data_dir.name + ".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> MilvusLiteServer:
        cmd = [
            sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir),
            "--host", "127.0.0.1", "--port", str(self.port), "--max-workers", "1",
        ]  # fmt: skip
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"milvus-lite server exited with {self.proc.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"milvus-lite server not listening on {self.port} after {timeout} s")

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # it closes its engine on KeyboardInterrupt
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> MilvusLiteServer:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
