"""Triton on a laptop: `pemt triton serve REPO` starts the Triton bundled in nvidia-pytriton,
prints its URLs, serves `python -m clients.triton_client FILE... --url`, and stops cleanly on
Ctrl-C (SIGINT), tritonserver included."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pemt.media.encode import make_test_video
from pemt.triton_serve import free_port, triton_available

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(not triton_available(), reason="nvidia-pytriton not installed"),
]


def test_pemt_triton_serve_and_the_client_command(repo: Path, tmp_path: Path) -> None:
    http, grpc, metrics = free_port(), free_port(), free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "pemt.cli", "triton", "serve", str(repo), "--http-port",
         str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert serve.stdout is not None
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = serve.stdout.readline()
            assert line, f"pemt triton serve exited: {''.join(lines)}"
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert f"PEMT_TRITON_URL=127.0.0.1:{grpc}" in text and f":{metrics}/metrics" in text

        a = make_test_video(tmp_path / "a.mp4", seconds=6, width=64, height=48, pattern=1)
        b = make_test_video(tmp_path / "b.mp4", seconds=3, width=64, height=48, pattern=4)
        res = subprocess.run(
            [sys.executable, "-m", "clients.triton_client", str(a), str(b), "--url",
             f"127.0.0.1:{grpc}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        out = res.stdout.splitlines()
        windows = [line for line in out if line.startswith("a.mp4")]
        assert len(windows) >= 2 and all("|e|=1.0000" in w for w in windows), out
        assert any(line.startswith("cosine a.mp4 ~ b.mp4") for line in out), out

        bad = subprocess.run(
            [sys.executable, "-m", "clients.triton_client", str(a), "--url", "127.0.0.1:1"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert bad.returncode != 0 and "Triton at 127.0.0.1:1" in bad.stderr

        serve.send_signal(signal.SIGINT)  # Ctrl-C
        assert serve.wait(60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)
    with pytest.raises(OSError):  # tritonserver went with it
        socket.create_connection(("127.0.0.1", grpc), timeout=1).close()
